"""Build the frequency ranking that Gemma 3 270M's reduced draft head uses by default.

    python benchmarks/gemma_ranking.py            # writes src/layerskip/data/draft_vocab/gemma3-270m.json

The corpus is local files only, read in sorted order so the same files give the same ranking:
Python's standard library sources (tests excluded) and the docs of the installed packages (their
METADATA long descriptions and *.md / *.rst files in site-packages). It is tokenised with the
model's own tokenizer. Gemma's id order is a poor ranking (73 % of its greedy tokens fall within
the first 8192 ids, per issue 16), hence a corpus count. Ties are broken by id, so the output is
stable; ids not seen in the corpus are left out (the draft head fills up in id order after them).
"""

from __future__ import annotations

import argparse
import hashlib
import sysconfig
from pathlib import Path

from layerskip.generation.draft_vocab import rank_tokens, write_ranking
from layerskip.model import packaged
from layerskip.model.loading import load_tokenizer

OUT = Path(__file__).resolve().parents[1] / "src" / "layerskip" / "data" / "draft_vocab" / "gemma3-270m.json"


def stdlib_sources() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def package_docs() -> list[Path]:
    site = Path(sysconfig.get_paths()["purelib"])
    meta = site.glob("*.dist-info/METADATA")
    docs = (p for ext in ("*.md", "*.rst") for p in site.rglob(ext) if "licenses" not in p.parts)
    return sorted({*meta, *docs})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", type=Path, default=OUT)
    args = p.parse_args()
    files = stdlib_sources() + package_docs()
    texts = [f.read_text(errors="ignore") for f in files]
    tokenizer = load_tokenizer(packaged.gemma3_270m_path())
    ranking = rank_tokens(tokenizer, texts)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_ranking(args.output, ranking)
    digest = hashlib.sha256(args.output.read_bytes()).hexdigest()[:16]
    size = sum(len(t) for t in texts)
    print(f"{len(files)} files, {size / 1e6:.1f} M characters -> {len(ranking)} distinct ids; "
          f"wrote {args.output} (sha256 {digest})")


if __name__ == "__main__":
    main()
