"""Chapter 1: byte-level BPE. Round trips, exactness against tiktoken, fast trainer == naive trainer."""

import hashlib
import os
import pickle
import random
import shutil
import warnings

import pytest
import regex
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gptlib import bpe as B
from gptlib import gpt2_tokenizer as G
from gptlib import tokenizer as T
from gptlib.bpe import GPT2_PATTERN, GPT4_PATTERN, TokenizerError
from gptlib.data import EOT
from gptlib.gpt2_tokenizer import load_gpt2_tokenizer, load_tokenizer
from gptlib.stories import generate_stories
from gptlib.tokenizer import BPETokenizer, train_bpe, train_bpe_naive

PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Arbitrary text: every code point UTF-8 can encode (no surrogates), and a mix of the
# characters where tokenizers go wrong: whitespace of all kinds, contractions, digits,
# combining marks, CJK, emoji with modifiers and flags, control characters.
TRICKY = list(
    " \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000'sStTdDmMlLvVrReEſ\u212a019٣½aé\u0301語🦊👍🏽🇫🇷!?.,-_\x00\x7f"
)
WORDS = [
    " the",
    "the",
    " cat",
    "'s",
    "'S",
    "  ",
    "\n\n",
    " 123",
    "4567",
    " café",
    "👍🏽",
    " ",
    ".",
    EOT[:3],
]
TEXTS = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=80),
    st.text(st.sampled_from(TRICKY), max_size=80),
    st.lists(st.sampled_from(WORDS + TRICKY), max_size=40).map("".join),
)
EXAMPLES = [
    "",
    " ",
    "   \n\n \t",
    "Hello world!",
    "🦊",
    "e\u0301",
    "語語語",
    "\x00\x01",
    "a" * 300,
    "don'T 's",
]


def with_examples(fn):
    for text in EXAMPLES:
        fn = example(text)(fn)
    return fn


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def stories():
    return generate_stories(400, seed=5)


@pytest.fixture(scope="module")
def tok(stories):
    return train_bpe(stories, vocab_size=700)


@pytest.fixture(scope="module")
def tok4(stories):
    return train_bpe(stories, vocab_size=700, pattern=GPT4_PATTERN)


@pytest.fixture(scope="module")
def cl100k_pattern():
    """tiktoken's own cl100k_base pattern, read without downloading its ranks."""
    from tiktoken_ext import openai_public

    mp = pytest.MonkeyPatch()
    mp.setattr(openai_public, "load_tiktoken_bpe", lambda *args, **kwargs: {})
    try:
        return openai_public.cl100k_base()["pat_str"]
    finally:
        mp.undo()


def reference(ranks, pattern, specials=None) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        "reference",
        pat_str=pattern,
        mergeable_ranks=ranks,
        special_tokens=specials or {},
    )


# ---------------------------------------------------------------- round trip and exactness


@PROPERTY
@given(TEXTS)
@with_examples
def test_round_trip_on_any_text(tok, tok4, text):
    for t in (tok, tok4):
        ids = t.encode(text, disallowed_special=())
        assert t.decode(ids) == text
        assert t.decode_bytes(ids) == text.encode("utf-8")


@PROPERTY
@given(TEXTS)
@with_examples
def test_trained_tokenizer_encodes_like_tiktoken(tok, tok4, cl100k_pattern, text):
    from tiktoken_ext.openai_public import r50k_pat_str

    for t, official_pattern in ((tok, r50k_pat_str), (tok4, cl100k_pattern)):
        ours = t.encode(text, disallowed_special=())
        assert ours == t.to_tiktoken().encode(text, disallowed_special=())
        # and with tiktoken's own copy of GPT-2's / GPT-4's pattern: our patterns are the same
        assert ours == reference(t.ranks, official_pattern).encode_ordinary(text)


def replay_merges(tok, data: bytes) -> list[int]:
    """Encode by applying the learned merges in the order they were learned (the trainer's view)."""
    ids = list(data)
    for new_id, pair in enumerate(tok.merges, start=256):
        ids = B.merge_pair(ids, pair, new_id)
    return ids


@PROPERTY
@given(TEXTS)
@with_examples
def test_encoding_by_ranks_replays_the_merges(tok, tok4, text):
    for t in (tok, tok4):
        expected = [
            i
            for chunk in B.split_text(text, t.pattern)
            for i in replay_merges(t, chunk.encode("utf-8"))
        ]
        assert t.encode(text, disallowed_special=()) == expected


@PROPERTY
@given(st.lists(st.integers(0, 699), max_size=30))
def test_any_ids_decode_without_error(tok, ids):
    text = tok.decode(ids)  # invalid UTF-8 becomes U+FFFD
    assert text == tok.decode_bytes(ids).decode("utf-8", errors="replace")


def test_invalid_utf8_is_replaced(tok):
    fox = tok.encode("🦊")
    assert len(fox) == 4 and tok.decode(fox[:2]) == "\ufffd" and tok.decode(fox) == "🦊"


def test_encode_batch_equals_encode(tok, stories):
    texts = stories[:50] + EXAMPLES + ["x<|endoftext|>y"]
    assert tok.encode_batch(texts, allowed_special="all") == [
        tok.encode(t, allowed_special="all") for t in texts
    ]


@PROPERTY
@given(st.binary(min_size=2, max_size=256))
def test_long_chunk_algorithm_equals_simple_one(tok, piece):
    # the heap version (used above 256 bytes) against the scan version, on the same bytes
    assert B._bpe_encode_long(piece, tok.ranks) == B.bpe_encode_piece(piece, tok.ranks)


def test_long_chunks_are_exact(tok):
    rng = random.Random(0)
    text = "".join(rng.choice("abcdefghij ") for _ in range(20_000)).replace(" ", "")[
        :5000
    ]
    text = text + " " + "é" * 3000
    assert tok.encode(text) == tok.to_tiktoken().encode(text)


# ---------------------------------------------------------------- GPT-2


@pytest.fixture(scope="module")
def gpt2(shared_data):
    return load_gpt2_tokenizer(shared_data / "gpt2.tiktoken")


@pytest.fixture(scope="module")
def gpt2_reference(shared_data):
    from tiktoken_ext.openai_public import r50k_pat_str

    ranks = tiktoken.load.load_tiktoken_bpe(str(shared_data / "gpt2.tiktoken"))
    return reference(ranks, r50k_pat_str, {EOT: 50256})


@PROPERTY
@given(TEXTS)
@with_examples
def test_gpt2_exact_on_any_text(gpt2, gpt2_reference, text):
    assert gpt2.encode(text, disallowed_special=()) == gpt2_reference.encode(
        text, disallowed_special=()
    )
    assert gpt2.decode(gpt2.encode(text, disallowed_special=())) == text


def test_gpt2_exact_on_every_sample_file(gpt2, gpt2_reference, shared_data):
    # not heldout/: it is for evaluation only
    files = sorted(p for p in shared_data.iterdir() if p.is_file())
    assert len(files) >= 7
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert gpt2.encode(text, disallowed_special=()) == gpt2_reference.encode(
            text, disallowed_special=()
        ), path


def test_gpt2_known_ids(gpt2):
    # the ids in tiktoken's documentation
    assert gpt2.encode("hello world") == [31373, 995]
    assert (
        gpt2.encode("<|endoftext|>", allowed_special="all") == [50256] == [gpt2.eot_id]
    )
    assert gpt2.vocab_size == 50257 and gpt2.special_tokens == {EOT: 50256}


def test_gpt2_both_formats_agree_and_merges_match_vocab_bpe(gpt2, shared_data):
    from_json = load_gpt2_tokenizer(shared_data / "encoder.json")
    assert (
        from_json.ranks == gpt2.ranks
        and from_json.special_tokens == gpt2.special_tokens
    )
    byte_of = {ch: b for b, ch in G.gpt2_bytes_to_unicode().items()}
    lines = (shared_data / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    merges = [
        tuple(gpt2.ranks[bytes(byte_of[c] for c in part)] for part in line.split())
        for line in lines
        if line
    ]
    assert gpt2.merges == merges


def test_gpt2_byte_alphabet():
    m = G.gpt2_bytes_to_unicode()
    assert (
        len(set(m.values())) == 256
        and m[32] == "Ġ"
        and m[10] == "Ċ"
        and m[ord("a")] == "a"
    )


def test_gpt2_sources_in_order(shared_data, monkeypatch, tmp_path):
    monkeypatch.delenv(G.GPT2_TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("GPTLIB_SHARED_DATA", str(shared_data))
    # the sample data folder
    assert load_gpt2_tokenizer().encode("hello world") == [31373, 995]
    folder = tmp_path / "gpt2"
    folder.mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(shared_data / name, folder / name)
    # the variable wins over the folder
    monkeypatch.setenv(G.GPT2_TOKENIZER_ENV, str(folder))
    assert load_gpt2_tokenizer().encode("hello world") == [31373, 995]
    monkeypatch.setenv(G.GPT2_TOKENIZER_ENV, str(tmp_path / "missing"))
    with pytest.raises(TokenizerError, match=G.GPT2_TOKENIZER_ENV) as e:
        load_gpt2_tokenizer()
    one_line(e)
    with pytest.raises(TokenizerError, match="neither gpt2.tiktoken nor") as e:
        load_gpt2_tokenizer(tmp_path)  # an argument wins over the variable
    one_line(e)


def test_gpt2_from_tiktoken_cache(shared_data, monkeypatch, tmp_path):
    monkeypatch.delenv(G.GPT2_TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("GPTLIB_SHARED_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    cached = tmp_path / hashlib.sha1(G.GPT2_TIKTOKEN_URL.encode()).hexdigest()
    # what tiktoken's cache holds after a download
    shutil.copy(shared_data / "gpt2.tiktoken", cached)
    assert load_gpt2_tokenizer().encode("hello world") == [31373, 995]


def test_gpt2_offline_without_files_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.delenv(G.GPT2_TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("GPTLIB_SHARED_DATA", str(tmp_path / "absent"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    # nothing listens
    monkeypatch.setattr(G, "GPT2_TIKTOKEN_URL", "http://127.0.0.1:9/r50k_base.tiktoken")
    with pytest.raises(TokenizerError) as e:
        load_gpt2_tokenizer()
    message = one_line(e)
    assert (
        "cannot be reached" in message
        and G.GPT2_TOKENIZER_ENV in message
        and "encoder.json" in message
    )


def test_load_tokenizer_by_name_or_path(tok, shared_data, monkeypatch, tmp_path):
    tok.save(tmp_path / "tok.txt")
    for spec in (tmp_path / "tok.txt", str(tmp_path / "tok.txt")):
        loaded = load_tokenizer(spec)
        assert (loaded.ranks, loaded.special_tokens) == (tok.ranks, tok.special_tokens)
    monkeypatch.delenv(G.GPT2_TOKENIZER_ENV, raising=False)
    monkeypatch.setenv("GPTLIB_SHARED_DATA", str(shared_data))
    assert load_tokenizer("gpt2").encode("hello world") == [31373, 995]


@pytest.mark.parametrize(
    "spec", ["gpt-2", "bpe", "GPT2", "missing.txt", 3, None, "dir"]
)
def test_load_tokenizer_bad_spec_is_one_line(spec, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    with pytest.raises(TokenizerError) as e:
        load_tokenizer(spec)
    message = one_line(e)
    assert message == (
        f'tokenizer={spec!r} is not allowed: use "gpt2" or the path of an existing file '
        "written by BPETokenizer.save"
    )


def test_gpt2_damaged_files_name_file_and_line(shared_data, tmp_path):
    lines = (shared_data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    (tmp_path / "encoder.json").write_bytes((shared_data / "encoder.json").read_bytes())
    (tmp_path / "vocab.bpe").write_text(
        "\n".join(lines[:10] + [lines[12]] + lines[11:]) + "\n", encoding="utf-8"
    )
    with pytest.raises(TokenizerError, match=r"vocab\.bpe, line 11: merge") as e:
        load_gpt2_tokenizer(tmp_path)
    one_line(e)
    (tmp_path / "vocab.bpe").write_text(
        "\n".join(lines[:1000]) + "\n", encoding="utf-8"
    )
    with pytest.raises(
        TokenizerError, match=r"vocab\.bpe, line 1000: 999 merges for 50000 \(truncated"
    ) as e:
        load_gpt2_tokenizer(tmp_path)
    one_line(e)
    (tmp_path / "encoder.json").write_text('{"a": 1,\n "b": }', encoding="utf-8")
    with pytest.raises(
        TokenizerError, match=r"encoder\.json, line 2: not valid JSON"
    ) as e:
        load_gpt2_tokenizer(tmp_path / "encoder.json")
    one_line(e)
    ranks = (shared_data / "gpt2.tiktoken").read_text().splitlines()
    (tmp_path / "gpt2.tiktoken").write_text(
        "\n".join(ranks[:500] + ["%%%% 500"] + ranks[501:]) + "\n"
    )
    with pytest.raises(
        TokenizerError, match=r"gpt2\.tiktoken, line 501: expected"
    ) as e:
        load_gpt2_tokenizer(tmp_path / "gpt2.tiktoken")
    one_line(e)


# ---------------------------------------------------------------- the fast trainer == the naive trainer


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN], ids=["gpt2", "gpt4"])
def test_fast_trainer_equals_naive_on_stories(pattern):
    texts = generate_stories(40, seed=2)
    fast, naive = train_bpe(texts, 400, pattern), train_bpe_naive(texts, 400, pattern)
    assert len(fast.merges) == 400 - 257
    assert (
        fast.merges == naive.merges
        and fast.ranks == naive.ranks
        and fast.special_tokens == naive.special_tokens
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(st.sampled_from("aab b\n1'é🦊"), max_size=40), min_size=1, max_size=8
    ),
    st.integers(257, 330),
)
def test_fast_trainer_equals_naive_on_random_text(texts, vocab_size):
    # few letters: many ties, overlapping pairs (aaa), and corpora that run out of merges
    if not "".join(texts):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast, naive = train_bpe(texts, vocab_size), train_bpe_naive(texts, vocab_size)
    assert fast.merges == naive.merges and fast.ranks == naive.ranks


def test_fast_trainer_equals_naive_on_tinystories(shared_data):
    text = (shared_data / "tiny_stories_train_head.txt").read_text(encoding="utf-8")[
        :15_000
    ]
    fast, naive = train_bpe(text, 500), train_bpe_naive(text, 500)
    assert fast.merges == naive.merges


def test_tie_rule_is_smallest_pair():
    # "ab" and "cd" both occur twice: the smaller pair (97, 98) goes first
    tok = train_bpe(["cd ab", "ab cd"], 259, special_tokens=())
    assert tok.merges[0] == (ord("a"), ord("b"))


def test_training_is_deterministic_and_order_free(stories):
    shuffled = stories[:]
    random.Random(0).shuffle(shuffled)
    assert (
        train_bpe(stories, 600).merges
        == train_bpe(shuffled, 600).merges
        == train_bpe(stories, 600).merges
    )


def test_string_or_iterable_of_strings():
    text = "\n\n".join(generate_stories(10))
    assert (
        train_bpe(text, 300).ranks
        == train_bpe([text], 300).ranks
        == train_bpe(iter([text]), 300).ranks
    )


def test_special_tokens_are_cut_out_and_get_the_last_ids():
    texts = [
        "<|endoftext|>".join(generate_stories(20)),
        "<|endoftext|>".join(generate_stories(20, start=20)),
    ]
    tok = train_bpe(texts, 300, special_tokens=("<|endoftext|>", "<|pad|>"))
    assert (
        tok.special_tokens == {"<|endoftext|>": 298, "<|pad|>": 299}
        and tok.vocab_size == 300
    )
    # never learned
    assert not any(b"<|" in token or b"|>" in token for token in tok.ranks)
    ids = tok.encode("story.<|endoftext|><|pad|>", allowed_special="all")
    assert ids[-2:] == [298, 299] and tok.decode(ids) == "story.<|endoftext|><|pad|>"
    assert tok.encode("<|pad|>", allowed_special={"<|pad|>"}) == [299]
    plain = tok.encode("<|endoftext|>", disallowed_special=())
    assert len(plain) > 1 and tok.decode(plain) == "<|endoftext|>"
    assert plain == tok.to_tiktoken().encode("<|endoftext|>", disallowed_special=())
    assert train_bpe("abc abc", 258, special_tokens=()).eot_id is None


def test_vocab_size_counts_special_tokens(tok):
    assert tok.vocab_size == 700 and len(tok.ranks) == 699 and tok.eot_id == 699
    assert tok.to_tiktoken().n_vocab == 700


def test_too_few_merges_warns_and_stops():
    with pytest.warns(UserWarning, match="allows only"):
        tok = train_bpe("abcd", 1000)
    # ties: smallest pair
    assert tok.merges == [(97, 98), (99, 100), (256, 257)] and tok.vocab_size == 260


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(texts="abc", vocab_size=256),
            r"vocab_size=256 is below 256 byte tokens \+ 1 special tokens = 257",
        ),
        (
            dict(texts="abc", vocab_size=257, special_tokens=("<a>", "<b>")),
            "vocab_size=257 is below",
        ),
        (dict(texts="abc", vocab_size=300.0), "vocab_size=300.0 must be an integer"),
        (dict(texts="", vocab_size=300), "training text is empty"),
        (dict(texts=[], vocab_size=300), "training text is empty"),
        (dict(texts=["", ""], vocab_size=300), "training text is empty"),
        (
            dict(texts=["ok", 3], vocab_size=300),
            "training text number 1 is a int, not a str",
        ),
        (
            dict(texts="abc", vocab_size=300, pattern="(unclosed"),
            "is not a valid regular expression",
        ),
        (
            dict(texts="abc", vocab_size=300, special_tokens=("<a>", "<a>")),
            "holds a token twice",
        ),
        (
            dict(texts="abc", vocab_size=300, special_tokens=("",)),
            "must be a non-empty string",
        ),
    ],
)
@pytest.mark.parametrize("trainer", [train_bpe, train_bpe_naive])
def test_bad_training_input(trainer, kwargs, match):
    with pytest.raises(TokenizerError, match=match) as e:
        trainer(**kwargs)
    one_line(e)


def test_special_token_in_text_when_not_allowed(tok):
    for call in (
        lambda: tok.encode("end<|endoftext|>"),
        lambda: tok.encode_batch(["fine", "end<|endoftext|>"]),
    ):
        with pytest.raises(
            TokenizerError, match=r"special token '<\|endoftext\|>' at character 3"
        ) as e:
            call()
        one_line(e)
    with pytest.raises(TokenizerError, match="not one of the special tokens") as e:
        tok.encode("x", allowed_special={"<|pad|>"})
    one_line(e)
    with pytest.raises(TokenizerError, match="must be 'all' or a set") as e:
        tok.encode("x", allowed_special="<|endoftext|>")
    one_line(e)


def test_bad_ids_and_types(tok):
    with pytest.raises(
        TokenizerError, match=r"token id 700 is not in the vocabulary \(ids 0..699\)"
    ) as e:
        tok.decode([1, 700])
    one_line(e)
    with pytest.raises(TokenizerError, match="token id -1"):
        tok.decode([-1])
    with pytest.raises(TokenizerError, match="token id 700 is not in the vocabulary"):
        tok.decode(iter([1, 700]))  # an iterator is read twice on the error path
    with pytest.raises(TokenizerError, match="is a bytes, not a str"):
        tok.encode(b"abc")


def test_bad_ranks():
    ranks = {bytes([i]): i for i in range(256)}
    with pytest.raises(TokenizerError, match=r"lack the single byte b'\\x00'"):
        BPETokenizer({b: i for b, i in ranks.items() if i})
    with pytest.raises(TokenizerError, match="distinct"):
        BPETokenizer(ranks, {EOT: 5})


# ---------------------------------------------------------------- saving and loading


def test_save_load_round_trip(tok, tok4, tmp_path, stories):
    for t in (tok, tok4):
        t.save(tmp_path / "tok.txt")
        again = BPETokenizer.load(tmp_path / "tok.txt")
        ours = (again.ranks, again.special_tokens, again.pattern, again.name)
        assert ours == (t.ranks, t.special_tokens, t.pattern, t.name)
        assert again.merges == t.merges  # recovered from the ranks
        assert [again.encode(s) for s in stories[:20]] == [
            t.encode(s) for s in stories[:20]
        ]
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert (
        tmp_path / "tok.txt"
    ).stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not private


def test_file_format_is_documented_text(tok, tmp_path):
    tok.save(tmp_path / "tok.txt")
    lines = (tmp_path / "tok.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#gptlib-bpe v1 {") and len(lines) == 1 + len(tok.ranks)
    assert lines[1] == "AA== 0" and lines[-1].endswith(" 698")


@pytest.mark.parametrize(
    "damage, match",
    [
        (
            lambda lines: lines[:300],
            r"line 301: the header announces 699 tokens but the file holds 299 \(truncated",
        ),
        (
            lambda lines: lines[:300] + [lines[300][:3]],
            r"line 301: expected '<base64 token> <rank>'",
        ),
        (
            lambda lines: lines[:50] + ["QUJD"] + lines[51:],
            r"line 51: expected '<base64 token> <rank>', got 'QUJD'",
        ),
        (lambda lines: lines[:50] + ["!!!! 49"] + lines[51:], r"line 51: expected"),
        (
            lambda lines: lines[:50] + [lines[20]] + lines[51:],
            r"line 51: token b'\\x13' or rank 19 appears twice",
        ),
        (
            lambda lines: ["not a tokenizer"] + lines[1:],
            r"line 1: not a gptlib tokenizer file",
        ),
        (
            lambda lines: lines + ["QUJD 5000"],
            r"line 701: more tokens than the 699 the header announces",
        ),
        (lambda lines: [lines[0][:40]] + lines[1:], r"line 1: damaged header"),
        (lambda lines: [], r"line 1: not a gptlib tokenizer file"),
    ],
)
def test_damaged_file_names_file_and_line(tok, tmp_path, damage, match):
    tok.save(tmp_path / "tok.txt")
    lines = (tmp_path / "tok.txt").read_text(encoding="utf-8").splitlines()
    (tmp_path / "bad.txt").write_text("\n".join(damage(lines)) + "\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=match) as e:
        BPETokenizer.load(tmp_path / "bad.txt")
    assert str(tmp_path / "bad.txt") in one_line(e)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nothing.txt")
    (tmp_path / "binary.txt").write_bytes(b"#gptlib-bpe v1 {}\n\xff\xfe\n")
    with pytest.raises(TokenizerError, match=r"line 2: not UTF-8 text") as e:
        BPETokenizer.load(tmp_path / "binary.txt")
    one_line(e)


def test_pickle_keeps_the_tokenizer(tok):
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode("Once upon a time") == tok.encode("Once upon a time")
    assert again.to_tiktoken().encode("a fox") == tok.encode("a fox")


# ---------------------------------------------------------------- patterns and helpers


@PROPERTY
@given(TEXTS)
def test_gpt4_pattern_splits_like_tiktokens(cl100k_pattern, text):
    assert B.split_text(text, GPT4_PATTERN) == regex.findall(cl100k_pattern, text)


def test_patterns_on_known_text():
    assert B.split_text("I'm 12345 ok!!\n\n") == [
        "I",
        "'m",
        " 12345",
        " ok",
        "!!",
        "\n\n",
    ]
    assert B.split_text("I'M 12345 ok!!\n\n", GPT4_PATTERN) == [
        "I",
        "'M",
        " ",
        "123",
        "45",
        " ok",
        "!!\n\n",
    ]


def test_compression_and_token_display(tok, stories):
    assert 2.5 < T.bytes_per_token(tok, stories[:50]) < 6
    assert T.bytes_per_token(T.truncated(tok, 256), stories[:5]) == 1.0
    html = T.show_tokens(tok, "Once <upon> a time").data
    # escaped, token by token
    assert "<upon>" not in html and "&lt;" in html and "&gt;" in html
    assert html.count("<span") == len(tok.encode("Once <upon> a time"))
    assert "tokens</p>" in html


def test_gpt2_download_goes_to_gptlib_home(monkeypatch, tmp_path):
    """Without a cache folder of the user's, tiktoken downloads GPT-2's ranks into
    gptlib_home()/downloads/tiktoken, and the environment is left as it was."""
    import tiktoken.load

    from gptlib import gpt2_tokenizer

    monkeypatch.setenv("GPTLIB_HOME", str(tmp_path))
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setattr(gpt2_tokenizer, "unreachable", lambda url: None)  # "online"
    seen = []
    fake = lambda url, expected_hash: (
        seen.append(os.environ["TIKTOKEN_CACHE_DIR"]) or {b"a": 0}
    )
    monkeypatch.setattr(tiktoken.load, "load_tiktoken_bpe", fake)
    assert gpt2_tokenizer._gpt2_from_tiktoken() == {b"a": 0}
    assert seen == [str(tmp_path / "downloads" / "tiktoken")]
    assert "TIKTOKEN_CACHE_DIR" not in os.environ
