"""Chapter 3: the encoder-decoder transformer (gptlib.transformer), checked against
torch.nn.Transformer."""

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gptlib.attention import MultiHeadAttention
from gptlib.transformer import Transformer, sinusoidal_encoding

# ---------------------------------------------------------------- torch.nn.Transformer


def copy_from_torch(ours: Transformer, ref: nn.Transformer) -> None:
    def copy_attention(dst: MultiHeadAttention, src: nn.MultiheadAttention):
        for proj, w, b in zip(
            (dst.q_proj, dst.k_proj, dst.v_proj),
            src.in_proj_weight.chunk(3),
            src.in_proj_bias.chunk(3),
        ):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        dst.out_proj.load_state_dict(src.out_proj.state_dict())

    with torch.no_grad():
        pairs = [
            *zip(ours.encoder, ref.encoder.layers),
            *zip(ours.decoder, ref.decoder.layers),
        ]
        for layer, ref_layer in pairs:
            copy_attention(layer.self_attn, ref_layer.self_attn)
            layer.ff.linear1.load_state_dict(ref_layer.linear1.state_dict())
            layer.ff.linear2.load_state_dict(ref_layer.linear2.state_dict())
            layer.norm1.load_state_dict(ref_layer.norm1.state_dict())
            layer.norm2.load_state_dict(ref_layer.norm2.state_dict())
        for layer, ref_layer in zip(ours.decoder, ref.decoder.layers):
            copy_attention(layer.cross_attn, ref_layer.multihead_attn)
            layer.norm3.load_state_dict(ref_layer.norm3.state_dict())
        if ref.encoder.norm is not None:
            ours.encoder_norm.load_state_dict(ref.encoder.norm.state_dict())
            ours.decoder_norm.load_state_dict(ref.decoder.norm.state_dict())


def torch_transformer(d, heads, layers, d_ff, norm_first, final_norm):
    kwargs = dict(
        d_model=d,
        nhead=heads,
        dim_feedforward=d_ff,
        dropout=0.0,
        batch_first=True,
        norm_first=norm_first,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nested-tensor fast path notes
        if (
            final_norm
        ):  # PyTorch's default: a final LayerNorm after each stack, in both placements
            return nn.Transformer(
                num_encoder_layers=layers, num_decoder_layers=layers, **kwargs
            )
        encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(**kwargs), layers, norm=None
        )
        decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(**kwargs), layers, norm=None
        )
        return nn.Transformer(custom_encoder=encoder, custom_decoder=decoder, **kwargs)


def padded_batch(B=3, S=9, T=7, vocab=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(1, vocab, (B, S), generator=g)
    tgt = torch.randint(1, vocab, (B, T), generator=g)
    for i, (s_len, t_len) in enumerate([(S, T), (S - 3, T - 2), (2, 3)][:B]):
        src[i, s_len:] = 0
        tgt[i, t_len:] = 0
    return src, tgt


@pytest.mark.parametrize(
    "norm_first,final_norm",
    [(False, None), (False, True), (True, None), (True, True)],
    ids=str,
)
def test_equals_torch_transformer(norm_first, final_norm):
    torch.manual_seed(0)
    d, heads, layers, d_ff = 32, 4, 3, 48
    uses_final_norm = norm_first if final_norm is None else final_norm
    ref = torch_transformer(d, heads, layers, d_ff, norm_first, uses_final_norm)
    ours = Transformer(
        20, 23, d, heads, layers, d_ff, 0.0, norm_first, final_norm=final_norm
    )
    assert isinstance(ours.encoder_norm, nn.LayerNorm) == uses_final_norm
    copy_from_torch(ours, ref)
    src, tgt = padded_batch()
    src_mask, tgt_mask = src != 0, tgt != 0
    x_src, x_tgt = ours.embed(ours.src_embed, src), ours.embed(ours.tgt_embed, tgt)
    causal = torch.triu(
        torch.ones(7, 7, dtype=torch.bool), diagonal=1
    )  # torch: True = masked
    memory_ref = ref.encoder(x_src, src_key_padding_mask=~src_mask)
    hidden = ref.decoder(
        x_tgt,
        memory_ref,
        tgt_mask=causal,
        tgt_is_causal=True,
        tgt_key_padding_mask=~tgt_mask,
        memory_key_padding_mask=~src_mask,
    )
    torch.testing.assert_close(ours.encode(src, src_mask), memory_ref)
    logits = ours(src, tgt, src_mask, tgt_mask)
    torch.testing.assert_close(logits, ours.generator(hidden))
    # and without any padding
    full = torch.randint(1, 20, (2, 6)), torch.randint(1, 23, (2, 5))
    hidden = ref(
        ours.embed(ours.src_embed, full[0]),
        ours.embed(ours.tgt_embed, full[1]),
        tgt_mask=causal[:5, :5],
    )
    torch.testing.assert_close(ours(*full), ours.generator(hidden))


# ---------------------------------------------------------------- padding


@pytest.mark.parametrize("norm_first", [False, True])
def test_padding_does_not_change_real_positions(norm_first):
    torch.manual_seed(0)
    model = Transformer(20, 20, 32, 4, 2, 64, 0.0, norm_first).eval()
    src, tgt = padded_batch()
    with torch.no_grad():
        batch = model(src, tgt, src != 0, tgt != 0)
        more = model(
            F.pad(src, (0, 4)),
            F.pad(tgt, (0, 3)),
            F.pad(src, (0, 4)) != 0,
            F.pad(tgt, (0, 3)) != 0,
        )
        for i in range(src.shape[0]):  # each sequence alone, without any padding
            s, t = src[i][src[i] != 0][None], tgt[i][tgt[i] != 0][None]
            alone = model(s, t)
            torch.testing.assert_close(batch[i, : t.shape[1]], alone[0])
            torch.testing.assert_close(more[i, : t.shape[1]], alone[0])


def test_padding_changes_outputs_without_the_mask():
    # the check above can fail: without the source mask, padding does leak into the outputs
    torch.manual_seed(0)
    model = Transformer(20, 20, 32, 4, 2, 64, 0.0, True).eval()
    src, tgt = padded_batch()
    with torch.no_grad():
        masked = model(src, tgt, src != 0)
        unmasked = model(src, tgt)
    assert not torch.allclose(masked[1], unmasked[1], atol=1e-3)


# ---------------------------------------------------------------- pieces


def test_sinusoidal_encoding():
    pe = sinusoidal_encoding(64, 16)
    assert pe.shape == (64, 16)
    torch.testing.assert_close(pe[5, 0], torch.tensor(5.0).sin())
    torch.testing.assert_close(pe[5, 1], torch.tensor(5.0).cos())
    torch.testing.assert_close(pe[7, 14], torch.tensor(7 / 10000 ** (14 / 16)).sin())
    torch.testing.assert_close(
        pe.pow(2).view(64, 8, 2).sum(-1), torch.ones(64, 8)
    )  # sin^2 + cos^2
    with pytest.raises(ValueError, match="even d_model"):
        sinusoidal_encoding(10, 7)


def test_bad_model_input():
    with pytest.raises(ValueError, match="d_model=30 is not divisible by n_heads=4"):
        Transformer(10, 10, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="n_layers=0"):
        Transformer(10, 10, 32, 4, 0)
    with pytest.raises(ValueError, match="n_layers=True"):  # a bool is not a size
        Transformer(10, 10, 32, 4, True)
    model = Transformer(10, 10, 32, 4, 1, 64, 0.0, True, max_len=8)
    src, tgt = torch.randint(1, 10, (2, 5)), torch.randint(1, 10, (2, 4))
    with pytest.raises(ValueError, match="src_mask must be a bool tensor of shape"):
        model(src, tgt, src_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="L <= max_len=8"):
        model(torch.randint(1, 10, (2, 9)), tgt)
    with pytest.raises(ValueError, match="must be"):
        model(src, tgt[:1])
