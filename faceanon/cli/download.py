"""`faceanon download`: fetch and verify the diffusion weights."""

from __future__ import annotations


def add_download(subparsers) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download and verify the diffusion weights",
        description="Fetch the weights named by the weights card (face model, VAE, image encoder) into the "
        "Hugging Face cache and verify them: every file present, sizes and sha256 where the card "
        "gives them, tensor names and shapes against each config. Sources can be overridden with "
        "FACEANON_FACE_MODEL, FACEANON_VAE and FACEANON_IMAGE_ENCODER (a repo id or a local folder; "
        "folders are verified the same way). Only safetensors files are loaded: .bin files are "
        "pickles, and loading one can run code. Exit status 1, with the reason, when a source is "
        "missing or wrong.",
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="download nothing: only verify what is already in the cache or the folders set",
    )
    parser.add_argument(
        "--print-hashes",
        action="store_true",
        help="print each file's size and sha256 (to pin them in weights_card/manifest.json)",
    )
    parser.set_defaults(run=run_download)


def run_download(args) -> int:
    from faceanon.weights import download_weights, load_manifest, sha256_of

    folders = download_weights(local_files_only=args.offline)  # WeightsNotFoundError: exit 1 with its reason
    manifest = load_manifest()
    for component, folder in folders.items():
        print(f"{component}: {folder}")
        if args.print_hashes:
            for name in manifest[component]["files"]:
                path = folder / name
                if path.is_file():
                    print(f"  {name}: size_bytes={path.stat().st_size} sha256={sha256_of(path)}")
    print("All weights are present and verified.")
    return 0
