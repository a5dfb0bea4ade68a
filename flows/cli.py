"""The ``pairwise`` console script."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pairwise_core import PairwiseClassifier, accuracy, agreement_f1, class_shares, embeddings, make_catalog


def _demo(args: argparse.Namespace) -> int:
    items, classes = make_catalog(args.n_items, args.n_classes, seed=args.seed)
    names = classes.column("class_name").to_pylist()
    class_id = {name: k for k, name in enumerate(names)}
    gold = np.array([class_id[label] for label in items.column("label").to_pylist()])
    results = {}
    for modality in ("image", "text"):
        column = f"{modality}_embedding"
        clf = PairwiseClassifier(embeddings(classes, column), strategy=args.strategy, seed=args.seed)
        results[modality] = clf.fit(embeddings(items, column)).classify(embeddings(items, column))
    print(f"Synthetic demo catalog: {args.n_items} items, {args.n_classes} classes, modalities image and text\n")
    print(f"{'':28}{'base':>8}{'pairwise':>10}")
    print(f"{'image-text agreement (F1)':28}"
          f"{agreement_f1(results['image'].base_label, results['text'].base_label):8.3f}"
          f"{agreement_f1(results['image'].label, results['text'].label):10.3f}")
    for modality, result in results.items():
        print(f"{modality + ' gold accuracy':28}{accuracy(gold, result.base_label):8.3f}{accuracy(gold, result.label):10.3f}")
    print("\nClass shares (image, pairwise):")
    for name, share in zip(names, class_shares(results["image"].label, len(names)), strict=True):
        print(f"  {name:<12}{share:6.1%}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pairwise", description="Zero-shot catalog reclassification.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run on a synthetic demo catalog and print the agreement report")
    demo.add_argument("--n-items", type=int, default=20_000)
    demo.add_argument("--n-classes", type=int, default=13)
    demo.add_argument("--strategy", choices=["tourney", "round_robin"], default="tourney")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:
        print(f"pairwise: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
