"""The tree viewer in a real browser: how long pages take to open, and the screenshots in docs/.

``python benchmarks/viewer.py timing [--nodes 500,2000,5000] [--repeats 5]`` builds random trees of
that many nodes (scores, logprobs, multiplicities, up to depth 12), writes each page, opens it in
headless chromium (a fresh tab per repeat) and prints the page's own clock: ``opened`` is
``performance.now()`` when the viewer has drawn the tree (navigation, parsing the data, layout and
building the SVG), ``script`` the viewer's own part of it (from its script's start), ``painted`` two
animation frames later (style, layout and paint done). Medians
over the repeats, with the Python time to build the page and its size.

``python benchmarks/viewer.py screenshots [--problem Q] [--budget 16]`` runs MCTS and particle
filtering on the bundled arith model with the arith PRM and saves docs/viewer_mcts.png and
docs/viewer_particle.png (and the pages next to them when ``--keep-pages``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from reason.core.tree import Tree
from reason.viz import TreeView, build_page, search_view, write_page
from reason.viz.browser import Chromium

ROOT = Path(__file__).resolve().parent.parent
READY = "window.reasonViewer && window.reasonViewer.ready"
SCREENSHOT_PROBLEM = "(17+8)*3-4*(9+6)"


def synthetic_tree(n_nodes: int, seed: int = 0, max_depth: int = 12) -> Tree:
    """A random tree of ``n_nodes`` nodes with PRM scores, logprobs, finish reasons and
    multiplicities; early nodes get more children, as in a search."""
    rng = random.Random(seed)
    tree = Tree([1, 2, 3], "1+2*3\n", meta={"question": "1+2*3"})
    nodes = [tree.root]
    while len(tree) < n_nodes:
        parent = nodes[int(len(nodes) * rng.random() ** 0.5)]
        if parent.depth >= max_depth:
            continue
        k = rng.randint(2, 6)
        node = tree.add_child(parent, [rng.randrange(4, 40) for _ in range(k)], "x" * k,
                              [-rng.random() for _ in range(k)], rng.choice(["stop", "eos", "length"]))
        node.scores["prm"] = rng.random()
        node.count = rng.choice([1, 1, 1, 2, 3])
        nodes.append(node)
    return tree


def timing(sizes: list[int], repeats: int) -> None:
    """Print opening times of pages of random trees of each size."""
    print(f"{'nodes':>6} {'page KB':>8} {'build ms':>9} {'script ms':>10} {'opened ms':>10} {'painted ms':>11}  "
          f"(medians of {repeats})")
    with Chromium() as browser, tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            view = TreeView(label=f"{size} nodes", tree=synthetic_tree(size, seed=size).to_dict())
            start = time.perf_counter()
            page = build_page([view])
            build_ms = 1000 * (time.perf_counter() - start)
            path = Path(tmp) / f"tree{size}.html"
            path.write_text(page, encoding="utf-8")
            opened, painted, script = [], [], []
            for _ in range(repeats + 1):  # the first opening warms the browser up and is not counted
                tab = browser.open(path.as_uri(), ready=READY)
                shown = tab.evaluate("document.querySelectorAll('g.node').length")
                if shown != size:
                    raise SystemExit(f"{size}-node page drew {shown} nodes")
                tab.wait_for("window.reasonViewer.paintedMs")
                opened.append(tab.evaluate("window.reasonViewer.openedMs"))
                painted.append(tab.evaluate("window.reasonViewer.paintedMs"))
                script.append(tab.evaluate("window.reasonViewer.openedMs - window.reasonViewer.startedMs"))
                tab.close()
            print(f"{size:>6} {len(page.encode()) / 1024:>8.0f} {build_ms:>9.1f} {statistics.median(script[1:]):>10.0f} "
                  f"{statistics.median(opened[1:]):>10.0f} "
                  f"{statistics.median(painted[1:]):>11.0f}")


def screenshots(problem: str, budget: int, keep_pages: bool) -> None:
    """Run MCTS and particle filtering on ``problem`` and save screenshots of their pages in docs/."""
    from reason.core.engine.hf import HFEngine  # the engine only for this command
    from reason.shortcuts import solve
    from rewards.catalog import load_prm
    from tasks.registry import resolve_model

    engine = HFEngine.from_pretrained(resolve_model("arith"), dtype="float32", device="cpu")
    prm = load_prm("arith")
    with Chromium() as browser:
        for strategy in ("mcts", "particle"):
            result = solve(engine, problem, strategy=strategy, budget=budget, prm=prm, seed=0)
            where = ROOT / "docs" if keep_pages else Path(tempfile.mkdtemp())
            page = write_page(where / f"viewer_{strategy}.html", [search_view(result, engine.decode, f"{strategy} · budget {budget}")],
                              title=problem)
            tab = browser.open(page.as_uri(), width=1400, height=860, ready=READY)
            tab.screenshot(ROOT / "docs" / f"viewer_{strategy}.png")
            print(f"{strategy}: {len(result.tree)} nodes, answer {result.answer}, docs/viewer_{strategy}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("timing")
    t.add_argument("--nodes", default="500,2000,5000")
    t.add_argument("--repeats", type=int, default=5)
    s = sub.add_parser("screenshots")
    s.add_argument("--problem", default=SCREENSHOT_PROBLEM)
    s.add_argument("--budget", type=int, default=16)
    s.add_argument("--keep-pages", action="store_true")
    args = parser.parse_args()
    if args.command == "timing":
        timing([int(x) for x in args.nodes.split(",")], args.repeats)
    else:
        screenshots(args.problem, args.budget, args.keep_pages)


if __name__ == "__main__":
    main()
