"""Put the site's JavaScript into book/_static/, so its pages work with no network.

    python .ci/web_assets.py                       # fetch the pinned tarballs from the npm registry
    python .ci/web_assets.py --tarball FILE.tgz    # or use tarballs at hand (`npm pack NAME@VERSION`)

Two packages, each into its own folder of book/_static/ (ignored by git: third-party code is
fetched, never committed):

* MathJax 3 (`mathjax/`): _config.yml points Sphinx's `mathjax_path` at its
  `tex-mml-chtml.js` component (the one Sphinx loads from a CDN by default). Unpacked: that
  component, the TeX extensions its autoloader fetches on demand, the CHTML fonts, the menu
  and accessibility parts it loads when a reader turns them on.
* ipywidgets' HTML manager (`widgets/`): `embed.js`, which draws the widgets whose state a
  notebook stores (chapter 7's playground) from that state, with its chunks and fonts;
  _config.yml points myst-nb's `nb_ipywidgets_js` at it instead of a CDN.

Each tarball is the one the npm registry lists for the pinned version, checked against the
sha512 of its `dist.integrity` before anything is unpacked; a registry mirror is honoured
through `npm_config_registry` as npm itself does. A tarball given with --tarball is used for
the package whose integrity it matches. Run again, the script does nothing for a folder that
already holds its version. `make book`, `make book-strict` and tests/test_site.py run it first.
"""

import argparse
import base64
import fnmatch
import hashlib
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "book" / "_static"
STAMP = ".installed"  # holds the version and integrity once a folder is complete


@dataclass(frozen=True)
class Package:
    name: str  # on npm
    version: str
    integrity: str  # `npm view NAME@VERSION dist.integrity`
    folder: str  # under book/_static/
    prefix: str  # the tarball's folder that is unpacked
    keep: tuple[str, ...]  # patterns of the paths under `prefix` to unpack
    entry: str  # the file the site loads: must be there

    def url(self) -> str:
        registry = os.environ.get("npm_config_registry") or os.environ.get(
            "NPM_CONFIG_REGISTRY"
        )
        registry = (registry or "https://registry.npmjs.org/").rstrip("/")
        base = self.name.rsplit("/", 1)[-1]
        return f"{registry}/{self.name}/-/{base}-{self.version}.tgz"


PACKAGES = [
    Package(
        name="mathjax",
        version="3.2.2",
        integrity="sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        folder="mathjax",
        prefix="package/es5/",
        keep=(
            "tex-mml-chtml.js",
            "input/*",
            "output/chtml/*",
            "ui/*",
            "a11y/*",
            "sre/*",
            "adaptors/*",
        ),
        entry="tex-mml-chtml.js",
    ),
    Package(
        name="@jupyter-widgets/html-manager",
        version="1.0.6",  # ipywidgets 8's
        integrity="sha512-+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ==",
        folder="widgets",
        prefix="package/dist/",
        # the standalone bundle, its lazily loaded chunks and its icon fonts; not the
        # require.js variant (embed-amd.js), not the source maps
        keep=("embed.js", "*.embed.js", "embed.js.LICENSE.txt", "*.woff", "*.woff2")
        + ("*.ttf", "*.eot", "*.svg"),
        entry="embed.js",
    ),
]


def download(url: str, attempts: int = 3) -> bytes:
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                return response.read()
        except OSError as error:
            if attempt == attempts:
                sys.exit(f"web assets: could not download {url}: {error}")
            print(f"web assets: {error}; retrying", file=sys.stderr)
            time.sleep(2 * attempt)
    raise AssertionError("unreachable")


def matches(package: Package, data: bytes) -> bool:
    algorithm, _, expected = package.integrity.partition("-")
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode() == expected


def target(package: Package, name: str) -> str | None:
    """Where a tarball member goes, relative to the package's folder, or None."""
    if name == "package/LICENSE":
        return "LICENSE"
    if not name.startswith(package.prefix):
        return None
    rest = name[len(package.prefix) :]
    if any(part in ("", ".", "..") for part in rest.split("/")):
        return None
    return rest if any(fnmatch.fnmatch(rest, p) for p in package.keep) else None


def unpack(package: Package, data: bytes, dest: Path) -> int:
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            relative = target(package, member.name)
            if relative is None or not member.isfile():
                continue
            path = dest / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    if not (dest / package.entry).is_file():
        sys.exit(f"web assets: {package.name}'s tarball has no {package.entry}")
    return count


def install(package: Package, tarballs: dict[Path, bytes]) -> None:
    dest, stamp = STATIC / package.folder, f"{package.version} {package.integrity}\n"
    if (dest / STAMP).is_file() and (dest / STAMP).read_text() == stamp:
        if (dest / package.entry).is_file():
            return  # already in place
    given = [path for path, data in tarballs.items() if matches(package, data)]
    if given:
        source, data = str(given[0]), tarballs[given[0]]
    else:
        source = package.url()
        print(f"web assets: downloading {source}")
        data = download(source)
        if not matches(package, data):
            sys.exit(
                f"web assets: {source} is not {package.name}@{package.version}: "
                f"its {package.integrity.partition('-')[0]} differs"
            )
    # unpack beside the destination, then swap it in: an interrupted run leaves no half folder
    staging = Path(tempfile.mkdtemp(prefix=f".{package.folder}-", dir=STATIC))
    try:
        count = unpack(package, data, staging)
        (staging / STAMP).write_text(stamp)
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    where = dest.relative_to(ROOT)
    print(f"web assets: {count} files of {package.name}@{package.version} in {where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tarball",
        type=Path,
        action="append",
        default=[],
        help="a local tarball to use instead of the registry's (repeatable)",
    )
    args = parser.parse_args()
    tarballs = {path: path.read_bytes() for path in args.tarball}
    STATIC.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES:
        install(package, tarballs)


if __name__ == "__main__":
    main()
