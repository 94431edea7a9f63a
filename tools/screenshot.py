#!/usr/bin/env python3
"""Render a notebook to HTML with nbconvert (its stored outputs, as the docs site shows them) and screenshot the page
in headless Chromium, so a person can look at a page as a reader would without Quarto.

    python tools/screenshot.py nbs/10_data.ipynb                       # writes _shots/10_data.png and .html
    python tools/screenshot.py nbs/10_data.ipynb --out /tmp/p.png --width 1000 --height 1600 --start 7742698b

Quarto (what the GitHub docs workflow uses for the real site) cannot be installed on our build machines; nbconvert
shows the same stored outputs with a different theme. Remote scripts (require.js, MathJax from a CDN) are removed so
the page renders offline. Chromium: `/usr/bin/chromium` (Debian package `chromium`) or `$CHROMIUM`.
"""
import argparse, os, re, shutil, subprocess, sys, tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--hide-scrollbars']

def render_html(nb_path, start: str|None=None) -> str:
    "The notebook at `nb_path` as one self-contained HTML page (images inline as data URIs, no remote scripts)."
    import nbformat
    from nbconvert import HTMLExporter
    nb = nbformat.read(str(nb_path), as_version=4)
    if start:
        ids = [c.get('id') for c in nb.cells]
        if start not in ids: sys.exit(f"{nb_path}: no cell with id {start!r} (ids: {', '.join(map(str, ids[:8]))}, ...)")
        nb.cells = nb.cells[ids.index(start):]
    body, _ = HTMLExporter(template_name='lab').from_notebook_node(nb)
    return re.sub(r'<script[^>]*\bsrc="https?://[^"]*"[^>]*>\s*</script>', '', body)

def cell_images(html: str) -> dict:
    "{cell id: number of inline images (`<img src=\"data:image/...\">` with data)} for every cell of a rendered page."
    parts = re.split(r'id="cell-id=([^"]+)"', html)
    return {parts[i]: len(re.findall(r'<img[^>]*\bsrc="data:image/(?:png|jpeg|gif|svg\+xml);base64,[A-Za-z0-9+/=\s]{100,}', parts[i + 1]))
            for i in range(1, len(parts) - 1, 2)}

def chromium() -> str:
    exe = os.environ.get('CHROMIUM') or shutil.which('chromium') or shutil.which('chromium-browser') or '/usr/bin/chromium'
    if not Path(exe).exists(): sys.exit(f"no Chromium at {exe}: `apt-get install chromium` or set $CHROMIUM")
    return exe

def screenshot(html_path, out_png, width: int=1100, height: int=3000, timeout: int=120) -> Path:
    "Screenshot the page at `html_path` (the top `height` pixels) into `out_png` with a fresh Chromium profile."
    out_png = Path(out_png).resolve(); out_png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='diffmix-chromium-') as prof:
        cmd = [chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={prof}', f'--window-size={width},{height}',
               f'--screenshot={out_png}', Path(html_path).resolve().as_uri()]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out_png.exists(): sys.exit(f"Chromium wrote no screenshot (exit {r.returncode}):\n{r.stderr[-2000:]}")
    return out_png

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebook')
    ap.add_argument('--out', help='PNG to write (default: _shots/<name>.png)')
    ap.add_argument('--width', type=int, default=1100)
    ap.add_argument('--height', type=int, default=3000, help='viewport height: the screenshot shows the page top to here')
    ap.add_argument('--start', help='render from the cell with this id on (to look at one figure)')
    a = ap.parse_args(argv)
    nb = Path(a.notebook)
    out = Path(a.out) if a.out else ROOT/'_shots'/f'{nb.stem}.png'
    html = render_html(nb, a.start)
    page = out.with_suffix('.html'); page.parent.mkdir(parents=True, exist_ok=True); page.write_text(html)
    imgs = cell_images(html)
    print(f"{page}: {sum(imgs.values())} inline images in {sum(1 for v in imgs.values() if v)} cells")
    print(screenshot(page, out, a.width, a.height))

if __name__ == '__main__':
    main()
