"""How long `dockyard image build-base` takes: cold, again, and a new layer on a cached Debian.

Builds into a fresh cache directory (removed afterwards), without the server:

    .venv/bin/python -m bench.build_base [--release bookworm]

Prints the three times and the tarball size. Needs mmdebstrap and Debian's mirror.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from dockyard.images import base


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--release", default="bookworm")
    a = p.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="dockyard-bench-images-"))
    quiet = lambda _: None  # noqa: E731
    try:
        cold = base.build(base.Recipe("bench", a.release), cache, quiet)
        again = base.build(base.Recipe("bench", a.release), cache, quiet)
        other = base.Recipe(
            "bench2", a.release, programs={"web": "/usr/bin/python3 -m http.server"}
        )
        layer = base.build(other, cache, quiet)
        size = cold.path.stat().st_size
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    assert again.debian_cached and again.layer_cached and layer.debian_cached
    print(f"base image, Debian {a.release}: {size / 2**20:.0f} MiB")
    print(f"  first build (mmdebstrap + layer)      {cold.seconds:7.2f} s")
    print(f"  same recipe again (both cached)       {again.seconds:7.2f} s")
    print(f"  new programs, Debian cached (layer)   {layer.seconds:7.2f} s")
    print(f"  first build / layer only: {cold.seconds / layer.seconds:.0f}x")


if __name__ == "__main__":
    main()
