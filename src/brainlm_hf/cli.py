# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""The `brainlm` command line: `brainlm convert SRC OUT`, more subcommands as they land."""

import argparse
import sys


def _convert(args: argparse.Namespace) -> None:
    from .convert import WEIGHTS_LICENSE_WARNING, convert_checkpoint

    if args.push_to_hub:
        print(f"warning: {WEIGHTS_LICENSE_WARNING}", file=sys.stderr)
    model = convert_checkpoint(
        args.source,
        args.output_dir,
        subfolder=args.subfolder,
        revision=args.revision,
        atlas_coordinates=args.atlas_coordinates,
        expected_preset=args.preset,
        push_to_hub=args.push_to_hub,
        accept_weights_license=args.accept_weights_license,
    )
    print(f"Converted {args.source} ({model.num_parameters() / 1e6:.2f}M parameters) to {args.output_dir}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="brainlm", description="BrainLM on Hugging Face.")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser(
        "convert",
        help="convert an original BrainLM checkpoint (13M, 111M, 650M families) into a brainlm_hf folder",
        description="SRC is an original checkpoint folder (config.json + pytorch_model.bin or model.safetensors) or a "
        "Hub repository id, e.g. `vandijklab/brainlm --subfolder vitmae_111M`.",
    )
    convert.add_argument("source", metavar="SRC")
    convert.add_argument("output_dir", metavar="OUT")
    convert.add_argument("--subfolder", help="folder inside SRC, e.g. old_13M, vitmae_111M, vitmae_650M")
    convert.add_argument("--revision", help="Hub revision of SRC")
    convert.add_argument("--atlas-coordinates", help="A424_Coordinates.dat (label x y z); required for 111M/650M")
    convert.add_argument("--preset", help="refuse a checkpoint whose architecture differs from this preset")
    convert.add_argument("--push-to-hub", metavar="REPO", help="upload OUT to this Hub repository")
    convert.add_argument("--accept-weights-license", action="store_true", help="confirm CC BY-NC-ND 4.0 re-hosting")
    convert.set_defaults(run=_convert)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"brainlm {args.command}: error: {error}\n")


if __name__ == "__main__":
    main()
