"""Front-end assets the portal serves but the repository does not carry: Aladin Lite (npm ``aladin-lite``).

Why fetched, not vendored: Aladin Lite is GPL-3 (Albireo is BSD-3) and 2.4 MB of minified
JavaScript with its WebAssembly core inlined; it is served to browsers as a separate file, so it
is installed beside the portal's static files (``web/static/vendor/aladin-lite/``, git-ignored)
from the npm registry with npm's own client (``npm pack``), together with its licence. Without it
the event page shows the static sky map only. ``make portal-assets`` runs :func:`install_aladin`.

The major version is pinned (``ALADIN_SPEC``): the page uses the v3 API (``A.init``,
``A.aladin``, ``A.MOCFromJSON``, ``A.catalog``), which a v4 may change.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from broker.errors import UserError

ALADIN_SPEC = "aladin-lite@3"
TARGET = Path(__file__).resolve().parents[2] / "web" / "static" / "vendor" / "aladin-lite"


def aladin_installed(target: Path = TARGET) -> bool:
    return (target / "aladin.js").is_file()


def install_aladin(target: Path = TARGET, spec: str = ALADIN_SPEC, force: bool = False) -> Path:
    """Fetch ``spec`` with ``npm pack`` and unpack its ``dist/aladin.js`` and licence into ``target``."""
    if aladin_installed(target) and not force:
        return target / "aladin.js"
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("npm is needed to fetch Aladin Lite (apt-get install npm), or the event page shows the "
                        "static sky map only")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise UserError(f"npm pack {spec} failed: {proc.stderr.strip()[-500:]}")
        tgz = next(Path(tmp).glob("aladin-lite-*.tgz"))
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tgz) as tar:
            for member, name in (("package/dist/aladin.js", "aladin.js"), ("package/LICENSE", "LICENSE"),
                                 ("package/package.json", "package.json")):
                src = tar.extractfile(member)
                if src is None:
                    raise UserError(f"{tgz.name} has no {member}")
                (target / name).write_bytes(src.read())
    return target / "aladin.js"


if __name__ == "__main__":
    print(install_aladin())
