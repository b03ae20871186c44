"""The `kiln` command: serve, manage API keys, manage the model catalog."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kiln.settings import Settings

DEV_KEY_FILE = "dev-api-key"


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        public_url=getattr(args, "public_url", None),
        allow_private_urls=True if getattr(args, "allow_private_urls", False) else None,
        device=getattr(args, "device", None),
    )


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from kiln.keys import KeyStore
    from kiln.models import Catalog
    from kiln.storage import Database

    settings = _settings(args)
    db = Database(settings.database_path)
    return settings, KeyStore(db, settings.api_keys), Catalog(db)


def _dev_key(settings: Settings, keys) -> str | None:  # type: ignore[no-untyped-def]
    """Create a first key when none exists; keep it in the data dir for the local example."""
    path = settings.data_dir / DEV_KEY_FILE
    if not keys.any_exists():
        key = keys.create("dev")
        path.write_text(key + "\n")
        path.chmod(0o600)
        print(f"Created the first API key (saved in {path}):\n  {key}\n")
    if path.exists() and keys.authenticate(path.read_text().strip()):
        return path.read_text().strip()
    return settings.api_keys[0] if settings.api_keys else None


def example_request(base_url: str, api_key: str) -> str:
    """A curl command for bash that generates a picture with the default demo model."""
    # closes the single-quoted JSON, substitutes a fresh UUID, reopens it
    fresh_uuid = "'\"$(python3 -c 'import uuid; print(uuid.uuid4())')\"'"
    task = (
        '[{"taskType": "imageInference", "taskUUID": "' + fresh_uuid + '", '
        '"model": "kiln:tiny-sd@1", "positivePrompt": "a red circle on a blue background", '
        '"width": 128, "height": 128, "steps": 4, "outputType": "URL", "outputFormat": "PNG"}]'
    )
    return (
        f"  curl -s {base_url}/v1 -H 'Authorization: Bearer {api_key}' "
        f"-H 'Content-Type: application/json' -d '{task}'"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from kiln.server import create_app
    from kiln.service import Services

    settings = _settings(args)
    services = Services.open(settings)
    key = _dev_key(settings, services.keys) or "<YOUR_API_KEY>"
    print(f"Kiln listening on {settings.base_url} (WebSocket {settings.base_url.replace('http', 'ws', 1)}/v1)")
    print("Try it (each run sends a fresh taskUUID):\n" + example_request(settings.base_url, key) + "\n", flush=True)
    uvicorn.run(
        create_app(services), host=settings.host, port=settings.port,
        ws_max_size=settings.max_body_bytes * 2, log_level="info",
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    _, keys, _ = _open(args)
    print(keys.create(args.name))
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    _, keys, _ = _open(args)
    for prefix, name, _created in keys.list():
        print(f"{prefix}…  {name}")
    return 0


def cmd_keys_usage(args: argparse.Namespace) -> int:
    _, keys, _ = _open(args)
    print(f"{'key':14} {'name':16} {'images':>8} {'cost (USD)':>14}")
    for usage in keys.usage():
        print(f"{usage.key_id[:12]}…  {usage.name:16} {usage.images:8d} {usage.cost:14.8f}")
    return 0


def cmd_models_init(args: argparse.Namespace) -> int:
    from kiln.models.demo import init_demo_models

    settings, _, catalog = _open(args)
    for entry in init_demo_models(catalog, settings.models_dir):
        print(f"registered {entry.air} ({entry.architecture}) at {entry.path}")
    return 0


def cmd_models_add(args: argparse.Namespace) -> int:
    from kiln.errors import ModelLoadError
    from kiln.models import CatalogEntry, ModelDefaults, parse_air
    from kiln.preprocess import ANNOTATED

    _, _, catalog = _open(args)
    air = parse_air(args.air)
    if args.category == "annotator" and args.conditioning in ANNOTATED:
        from kiln.engine.annotators import check_annotator  # imports torch

        try:  # refuse files a request could not load, before they are registered
            check_annotator(args.conditioning, args.path)
        except ModelLoadError as error:
            print(f"kiln: {error.message}", file=sys.stderr)
            return 2
    entry = catalog.add(CatalogEntry(
        air=str(air), name=args.name or Path(args.path).stem, version=args.version or air.version,
        category=args.category, type=args.type, architecture=args.architecture, path=args.path,
        config_path=args.config, tags=tuple(t for t in (args.tags or "").split(",") if t),
        conditioning=args.conditioning, comment=args.comment or "",
        defaults=ModelDefaults(
            width=args.default_width, height=args.default_height, steps=args.default_steps,
            cfg=args.default_cfg, scheduler=args.default_scheduler,
        ),
    ))
    print(f"registered {entry.air} ({entry.category}, {entry.architecture}) at {entry.path}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    _, _, catalog = _open(args)
    for e in catalog.all():
        print(f"{e.air:32} {e.category:11} {e.architecture:5} {e.path}")
    return 0


def cmd_models_remove(args: argparse.Namespace) -> int:
    _, _, catalog = _open(args)
    if not catalog.remove(args.air):
        print(f"no model {args.air}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description=__doc__)
    parser.add_argument("--data-dir", help="data directory (env KILN_DATA_DIR, default ./kiln-data)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--public-url", help="base of imageURLs (env KILN_PUBLIC_URL)")
    serve.add_argument("--allow-private-urls", action="store_true")
    serve.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print it")
    create.add_argument("--name", default="default")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list stored keys").set_defaults(func=cmd_keys_list)
    keys.add_parser("usage", help="images generated and their cost, per key").set_defaults(func=cmd_keys_usage)

    models = sub.add_parser("models", help="manage the model catalog").add_subparsers(dest="models", required=True)
    models.add_parser("init", help="build and register the demo models").set_defaults(func=cmd_models_init)
    add = models.add_parser("add", help="register a local checkpoint, LoRA, ControlNet, VAE or annotator")
    add.add_argument("path", help="a diffusers folder or a single-file .safetensors (annotators: "
                     "the folder or file `kiln.preprocess.ANNOTATED` names)")
    add.add_argument("--air", required=True, help="identifier, e.g. civitai:4201@130072")
    add.add_argument("--architecture", required=True, choices=["sd1x", "sdxl"],
                     help="the base model family (annotators serve both: either value works)")
    add.add_argument("--category", default="checkpoint",
                     choices=["checkpoint", "lora", "lycoris", "controlnet", "vae", "embeddings", "annotator"])
    add.add_argument("--type", help="base, inpainting or refiner (checkpoints)")
    add.add_argument("--config", help="diffusers config folder for a single-file checkpoint")
    add.add_argument("--name")
    add.add_argument("--version")
    add.add_argument("--tags", help="comma-separated")
    add.add_argument("--conditioning", help="canny, depth, ... (ControlNets); for annotators, the "
                     "preprocessor served: depth, seg, openpose, normalbae, softedge or lineart_anime")
    add.add_argument("--comment")
    add.add_argument("--default-width", type=int)
    add.add_argument("--default-height", type=int)
    add.add_argument("--default-steps", type=int)
    add.add_argument("--default-cfg", type=float)
    add.add_argument("--default-scheduler")
    add.set_defaults(func=cmd_models_add)
    sub.add_parser("demo", help="train the demo model: `kiln demo --help`", add_help=False)
    models.add_parser("list", help="list registered models").set_defaults(func=cmd_models_list)
    remove = models.add_parser("remove", help="unregister a model (files are kept)")
    remove.add_argument("air")
    remove.set_defaults(func=cmd_models_remove)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command_at = 2 if argv[:1] == ["--data-dir"] else 0
    if argv[command_at:command_at + 1] == ["demo"]:  # the training tools have their own parser
        from kiln.demo.cli import main as demo_main

        return demo_main(argv[command_at + 1:])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"kiln: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
