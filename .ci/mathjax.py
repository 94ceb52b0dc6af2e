"""Put MathJax 3 into book/_static/mathjax/, so the site typesets its math with no network.

    python .ci/mathjax.py                    # fetch the pinned tarball from the npm registry
    python .ci/mathjax.py --tarball FILE.tgz # or use a tarball at hand (`npm pack mathjax@3.2.2`)

The folder is ignored by git (MathJax is third-party code: it is fetched, never committed).
The tarball is the one the npm registry lists for the pinned version, checked against the
sha512 of its `dist.integrity` before anything is unpacked; a registry mirror is honoured
through `npm_config_registry` as npm itself does. Run again, the script does nothing if the
folder already holds this version. `make book`, `make book-strict` and tests/test_site.py
run it first; _config.yml points Sphinx's `mathjax_path` at the unpacked component.

Only what the site can load is unpacked: the `tex-mml-chtml.js` component (the one Sphinx
loads from a CDN by default), the TeX extensions its autoloader fetches on demand, the CHTML
fonts, the menu and accessibility parts it loads when a reader turns them on, and the licence.
"""

import argparse
import base64
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

VERSION = "3.2.2"
# `npm view mathjax@3.2.2 dist.integrity`
INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="
COMPONENT = "tex-mml-chtml.js"

ROOT = Path(__file__).resolve().parent.parent
DEST = ROOT / "book" / "_static" / "mathjax"
STAMP = ".installed"  # holds VERSION and INTEGRITY once the folder is complete
# paths inside the tarball's package/es5/ that are unpacked (files, or folders with a trailing /)
KEEP = (COMPONENT, "input/", "output/chtml/", "ui/", "a11y/", "sre/", "adaptors/")
PREFIX = "package/es5/"


def registry_url() -> str:
    registry = os.environ.get("npm_config_registry") or os.environ.get(
        "NPM_CONFIG_REGISTRY"
    )
    registry = (registry or "https://registry.npmjs.org/").rstrip("/")
    return f"{registry}/mathjax/-/mathjax-{VERSION}.tgz"


def download(url: str, attempts: int = 3) -> bytes:
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        except OSError as error:
            if attempt == attempts:
                sys.exit(f"mathjax: could not download {url}: {error}")
            print(f"mathjax: {error}; retrying", file=sys.stderr)
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def check_integrity(data: bytes, source: str) -> None:
    algorithm, _, expected = INTEGRITY.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        sys.exit(
            f"mathjax: {source} is not mathjax@{VERSION}: {algorithm} {actual} != {expected}"
        )


def target(name: str) -> str | None:
    """Where a tarball member goes, relative to DEST, or None to leave it out."""
    if name == "package/LICENSE":
        return "LICENSE"
    if not name.startswith(PREFIX):
        return None
    rest = name[len(PREFIX) :]
    parts = rest.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    if any(
        rest == keep or (keep.endswith("/") and rest.startswith(keep)) for keep in KEEP
    ):
        return rest
    return None


def unpack(data: bytes, dest: Path) -> int:
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            relative = target(member.name)
            if relative is None or not member.isfile():
                continue
            path = dest / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    if not (dest / COMPONENT).is_file():
        sys.exit(f"mathjax: the tarball has no es5/{COMPONENT}")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tarball", type=Path, help="a local mathjax tarball instead of the registry's"
    )
    args = parser.parse_args()

    stamp = f"{VERSION} {INTEGRITY}\n"
    if (
        (DEST / STAMP).is_file()
        and (DEST / STAMP).read_text() == stamp
        and (DEST / COMPONENT).is_file()
    ):
        return  # already in place
    if args.tarball:
        source, data = str(args.tarball), args.tarball.read_bytes()
    else:
        source = registry_url()
        print(f"mathjax: downloading {source}")
        data = download(source)
    check_integrity(data, source)

    # unpack beside the destination, then swap it in, so that an interrupted run leaves no half folder
    DEST.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mathjax-", dir=DEST.parent))
    try:
        count = unpack(data, staging)
        (staging / STAMP).write_text(stamp)
        if DEST.exists():
            shutil.rmtree(DEST)
        staging.rename(DEST)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"mathjax: {count} files of mathjax@{VERSION} in {DEST.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
