"""Write the HTML template of `dvc plots show` with the Vega libraries inside it, so that
the page it renders (dvc_plots/index.html) draws its charts with no network:

    python -m stages.tools.plots_page            # rewrite .dvc/plots/page.html from npm
    python -m stages.tools.plots_page --check    # exit 1 if it is not the versions DVC loads

DVC's own page loads vega, vega-lite and vega-embed from a CDN (`<script src=...>` in
dvc_render's VegaRenderer.SCRIPTS); with no network its charts stay blank. This tool takes
the versions pinned there, fetches each package's tarball from the npm registry with
`npm pack` (npm must be installed; nothing else is downloaded), and inlines its built
`build/<name>.min.js` into the template, with the versions, tarball names, integrity
hashes and licences in a comment at the top. `.dvc/config` (`plots.html_template`) makes
plain `dvc plots show` use it. The template leaves out DVC's scripts placeholder, so the
page has no CDN tags at all.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

from stages.lib.outputs import atomic_path

PAGE = Path(".dvc/plots/page.html")
PACKAGES = ("vega", "vega-lite", "vega-embed")  # in load order: vega-lite needs vega, vega-embed both
# What dvc_render substitutes in a template; the page keeps the refresh tag and the plots
# but not the scripts (DVC's CDN tags). Written here with braces added at run time, so
# that this file's text never holds one.
PLACEHOLDER = "{{{}}}".format
STYLE = """    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>"""


class PageError(Exception):
    """A missing tool, an unexpected package, an outdated page: one line, exit code 1."""


def expected_versions() -> dict[str, str]:
    """{package: version} that DVC's default page loads from the CDN."""
    from dvc_render.vega import VegaRenderer

    found = dict(re.findall(r"/npm/(vega(?:-lite|-embed)?)@([0-9][0-9A-Za-z.+-]*)", VegaRenderer.SCRIPTS))
    if sorted(found) != sorted(PACKAGES):
        raise PageError(f"dvc_render's VegaRenderer.SCRIPTS loads {sorted(found)}, not {list(PACKAGES)}")
    return {name: found[name] for name in PACKAGES}


def npm_pack(name: str, pinned: str, folder: Path) -> dict:
    """Download `name@pinned`'s tarball from the npm registry into `folder`; npm's record of
    it (filename, integrity, ...)."""
    try:
        result = subprocess.run(["npm", "pack", f"{name}@{pinned}", "--json", "--pack-destination", str(folder)],
                                capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise PageError("npm not found: install Node.js and npm to fetch the Vega packages") from e
    if result.returncode != 0:
        raise PageError(f"npm pack {name}@{pinned} failed:\n{result.stderr.strip()}")
    (record,) = json.loads(result.stdout)
    if record["name"] != name or record["version"] != pinned:
        raise PageError(f"npm pack {name}@{pinned} gave {record['name']}@{record['version']}")
    return record


def read_member(tarball: Path, member: str) -> str:
    with tarfile.open(tarball, "r:gz") as tar:
        return tar.extractfile(f"package/{member}").read().decode("utf-8")


def inline_script(code: str) -> str:
    """The minified file as the body of a <script> element: without its source-map comment
    (the map is not shipped), with any `</script` escaped so it cannot close the element."""
    code = re.sub(r"\n?//# sourceMappingURL=\S+\s*$", "", code)
    return re.sub(r"</(script)", r"<\\/\1", code, flags=re.IGNORECASE)


def comment_text(text: str) -> str:
    return text.replace("--", "- -")  # "--" may not appear inside an HTML comment


def licence_notes(licences: list[tuple[str, str, str]]) -> list[str]:
    """(name, SPDX id, LICENSE text) per package, as the comment lists them: each package's
    copyright notice, and the terms after it once for the packages that share them word
    for word (vega, vega-lite and vega-embed carry the same BSD-3-Clause text)."""
    by_terms: dict[str, list[str]] = {}
    for name, spdx, text in licences:
        notice, _, terms = text.strip().partition("\n\n")
        by_terms.setdefault(terms, []).append(f"{name} ({spdx}):\n{notice}")
    notes = []
    for terms, notices in by_terms.items():
        notes += ["\n\n".join(notices), "", f"{'Each under these terms' if len(notices) > 1 else 'Under these terms'}:",
                  "", terms, ""]
    return notes[:-1]


def build(folder: Path) -> str:
    versions = expected_versions()
    scripts, sources, licences = [], [], []
    for name, pinned in versions.items():
        record = npm_pack(name, pinned, folder)
        tarball = folder / record["filename"]
        scripts.append(f"    <script>/* {name} {pinned} */\n{inline_script(read_member(tarball, f'build/{name}.min.js'))}\n    </script>")
        sources.append(f"  {name} {pinned}: build/{name}.min.js from the npm registry's {record['filename']}"
                       f" ({record['integrity']})")
        package = json.loads(read_member(tarball, "package.json"))
        licences.append((name, package.get("license", "see its LICENSE"), read_member(tarball, "LICENSE")))
    header = "\n".join([
        "The page `dvc plots show` writes, readable with no network: the libraries DVC's own page",
        "loads from a CDN are inlined below, at the versions it pins (dvc_render's VegaRenderer.SCRIPTS,",
        f"dvc-render {version('dvc-render')}):",
        *sources,
        "Written by `python -m stages.tools.plots_page` (npm pack); do not edit by hand.",
        "",
        *licence_notes(licences),
    ])
    return "\n".join([
        "<!DOCTYPE html>",
        f"<!--\n{comment_text(header)}\n-->",
        "<html>",
        "<head>",
        f"    {PLACEHOLDER('refresh_tag')}",
        '    <meta charset="utf-8">',
        "    <title>Cats vs. dogs: DVC plots</title>",
        *scripts,
        STYLE,
        "</head>",
        "<body>",
        f"    {PLACEHOLDER('plot_divs')}",
        "</body>",
        "</html>",
        "",
    ])


def recorded_versions(page: str) -> dict[str, str]:
    """{package: version} of the scripts inlined in a page this tool wrote."""
    return dict(re.findall(r"<script>/\* (vega(?:-lite|-embed)?) (\S+) \*/", page))


def check(path: Path) -> list[str]:
    """What is wrong with the page at `path`: empty when it inlines what DVC loads."""
    if not path.is_file():
        return [f"{path} is missing: run python -m stages.tools.plots_page"]
    page = path.read_text(encoding="utf-8")
    problems = []
    if recorded_versions(page) != expected_versions():
        problems.append(f"{path} inlines {recorded_versions(page)}, DVC loads {expected_versions()}:"
                        " run python -m stages.tools.plots_page")
    if PLACEHOLDER("plot_divs") not in page:
        problems.append(f"{path} has no plots placeholder")
    if PLACEHOLDER("scripts") in page or re.search(r"<script[^>]*\ssrc=", page):
        problems.append(f"{path} loads scripts from elsewhere")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is not what DVC loads")
    parser.add_argument("--out", type=Path, default=PAGE, help=f"where to write (default {PAGE})")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check(args.out)
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1 if problems else 0
        with tempfile.TemporaryDirectory() as folder:
            page = build(Path(folder))
        with atomic_path(args.out, suffix=".html") as tmp:  # an interrupted rewrite leaves the old page
            tmp.write_text(page, encoding="utf-8")
        print(f"{args.out}: {', '.join(f'{k} {v}' for k, v in recorded_versions(page).items())}, {len(page) // 1024} KiB")
        return 0
    except PageError as e:
        print(e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
