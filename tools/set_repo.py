"""Name the GitHub repository the notebook is published in, in the two places that must agree: its Colab badge and
its REPO knob (what the install cell pip-installs). python tools/set_repo.py [OWNER/NAME]; default: git's origin."""
import json
import re
import subprocess
import sys
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "nanogpt_tg_colab.ipynb"
BADGE = re.compile(r"(colab\.research\.google\.com/github/)[^/]+/[^/]+(/blob/)")
KNOB = re.compile(r'^REPO = "[^"]*"', re.M)


def origin() -> str:
    """owner/name of the git remote 'origin' (https or ssh form)."""
    got = subprocess.run(["git", "remote", "get-url", "origin"], cwd=NOTEBOOK.parent, capture_output=True, text=True)
    if got.returncode != 0:
        sys.exit("error: this checkout has no git remote 'origin'; give the repository: python tools/set_repo.py OWNER/NAME")
    url = got.stdout.strip()
    m = re.search(r"github\.com[:/]([^/]+/[^/]+?)(\.git)?$", url)
    if not m:
        sys.exit(f"error: origin {url!r} is not a GitHub repository; give OWNER/NAME")
    return m.group(1)


def set_repo(repo: str):
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        sys.exit(f"error: {repo!r} is not OWNER/NAME")
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        text = "".join(cell["source"])
        text = BADGE.sub(rf"\g<1>{repo}\g<2>", text) if cell["cell_type"] == "markdown" else KNOB.sub(f'REPO = "{repo}"', text)
        cell["source"] = text.splitlines(keepends=True)
    NOTEBOOK.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{NOTEBOOK.name}: badge and REPO now name {repo}")


if __name__ == "__main__":
    set_repo(sys.argv[1] if len(sys.argv) > 1 else origin())
