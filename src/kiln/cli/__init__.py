"""The `kiln` command: serve, manage API keys, manage the model catalog."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from kiln.cli.common import _at_least_one, _open, _settings
from kiln.cli.models import (
    cmd_models_add,
    cmd_models_import,
    cmd_models_init,
    cmd_models_list,
    cmd_models_remove,
)
from kiln.errors import KilnError
from kiln.settings import Settings

__all__ = ["build_parser", "example_request", "main"]

DEV_KEY_FILE = "dev-api-key"


def _dev_key(settings: Settings, keys) -> str | None:  # type: ignore[no-untyped-def]
    """What the example request puts after `Bearer `: a shell expression that reads the dev key
    from its file (so the key itself is never printed twice), or None without a valid key file.

    When no key exists, creates one, prints it this once and keeps it in the data directory in a
    file created with mode 0600 (never readable by others, not even for a moment); later starts
    print only where it is kept.
    """
    path = (settings.data_dir / DEV_KEY_FILE).resolve()
    if not keys.any_exists():
        key = keys.create("dev")
        path.unlink(missing_ok=True)  # O_CREAT keeps the mode of a file that exists
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
            file.write(key + "\n")
        print(f"Created the first API key, shown this once (kept in {path}, readable only by you):\n  {key}\n")
    elif path.exists():
        print(f"API key: the one kept in {path}")
    if path.exists() and keys.authenticate(path.read_text().strip()):
        # ends and restarts the single quotes that example_request puts around the header
        return "'\"$(cat " + shlex.quote(str(path)) + ")\"'"
    return None


def example_request(base_url: str, api_key: str) -> str:
    """A curl command for bash that draws a picture with the trained demo model `kiln:shapes@1`."""
    # closes the single-quoted JSON, substitutes a fresh UUID, reopens it
    fresh_uuid = "'\"$(python3 -c 'import uuid; print(uuid.uuid4())')\"'"
    task = (
        '[{"taskType": "imageInference", "taskUUID": "' + fresh_uuid + '", '
        '"model": "kiln:shapes@1", "positivePrompt": "a yellow circle on a blue background", '
        '"outputType": "URL", "outputFormat": "PNG"}]'
    )
    return (
        f"  curl -s {base_url}/v1 -H 'Authorization: Bearer {api_key}' "
        f"-H 'Content-Type: application/json' -d '{task}'"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from kiln.logs import logging_config
    from kiln.server import create_app
    from kiln.service import Services

    settings = _settings(args)
    services = Services.open(settings)
    key = _dev_key(settings, services.keys) or "<YOUR_API_KEY>"
    print(f"Kiln listening on {settings.base_url} (WebSocket {settings.base_url.replace('http', 'ws', 1)}/v1)")
    print("Try it (each run sends a fresh taskUUID):\n" + example_request(settings.base_url, key) + "\n", flush=True)
    uvicorn.run(
        create_app(services, preload=settings.preload_models), host=settings.host, port=settings.port,
        ws_max_size=settings.max_body_bytes * 2,
        log_config=logging_config(settings.log_format),
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


def cmd_keys_webhook_secret(args: argparse.Namespace) -> int:
    _, keys, _ = _open(args)
    principal = keys.authenticate(args.key)
    if principal is None:
        raise ValueError("that API key is not valid here (give the key itself, not its id)")
    print(keys.webhook_secret(principal.key_id))
    return 0


def cmd_keys_usage(args: argparse.Namespace) -> int:
    _, keys, _ = _open(args)
    print(f"{'key':14} {'name':16} {'images':>8} {'cost (USD)':>14}")
    for usage in keys.usage():
        print(f"{usage.key_id[:12]}…  {usage.name:16} {usage.images:8d} {usage.cost:14.8f}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from kiln.doctor import diagnose

    checks = diagnose(_settings(args))
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.found}")
        if not check.ok:
            print(f"     fix: {check.fix}")
    return 0 if all(check.ok for check in checks) else 1


def cmd_media_prune(args: argparse.Namespace) -> int:
    from kiln.media import ImageStore, open_blobs
    from kiln.service.retention import Retention
    from kiln.service.task_registry import TaskRegistry
    from kiln.storage import Database

    settings = _settings(args)
    db = Database.open(settings)
    images = ImageStore(db, open_blobs(settings))
    media_ttl_s = settings.media_ttl_s if args.older_than is None else args.older_than
    tasks = TaskRegistry(db, images, settings.task_ttl_s, front_id="cli")  # not a front: runs no task
    purged = Retention(images, tasks, media_ttl_s).purge()
    print(f"deleted {purged.images} images stored more than {media_ttl_s:g} s ago and "
          f"{purged.tasks} expired task records")
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
    serve.add_argument("--preload", action="append", metavar="AIR",
                       help="load this model at start, before /ready answers 200 (repeatable; "
                       "env KILN_PRELOAD_MODELS, comma-separated)")
    serve.add_argument("--executor", choices=["in-process", "ray"],
                       help="where the engine runs: in this process (default) or as Ray Serve "
                       "replicas (env KILN_EXECUTOR; needs pip install 'kiln[cluster]')")
    serve.add_argument("--ray-address", metavar="ADDRESS",
                       help="the Ray cluster to join, e.g. head-node:6379 (env KILN_RAY_ADDRESS; "
                       "default: RAY_ADDRESS, else a local Ray started by this front)")
    serve.add_argument("--replicas", type=_at_least_one, metavar="N",
                       help="engine replicas with --executor ray, one GPU each where the cluster "
                       "has GPUs (env KILN_REPLICAS, default 1)")
    serve.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print it")
    create.add_argument("--name", default="default")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list stored keys").set_defaults(func=cmd_keys_list)
    keys.add_parser("usage", help="images generated and their cost, per key").set_defaults(func=cmd_keys_usage)
    webhook_secret = keys.add_parser(
        "webhook-secret", help="the secret that signs this key's webhooks and uploads (Kiln-Signature)")
    webhook_secret.add_argument("key", help="the API key")
    webhook_secret.set_defaults(func=cmd_keys_webhook_secret)

    sub.add_parser("doctor", help="check torch and the device, the data dir, the database, disk "
                   "space and the catalog's files; say what to fix").set_defaults(func=cmd_doctor)
    media = sub.add_parser("media", help="stored images").add_subparsers(dest="media", required=True)
    prune = media.add_parser("prune", help="delete expired images and task records now "
                             "(a running server does it every minute)")
    prune.add_argument("--older-than", type=float, metavar="SECONDS",
                       help="delete images stored before this many seconds ago "
                       "(default KILN_MEDIA_TTL)")
    prune.set_defaults(func=cmd_media_prune)

    models = sub.add_parser("models", help="manage the model catalog").add_subparsers(dest="models", required=True)
    models.add_parser("init", help="build and register the demo models").set_defaults(func=cmd_models_init)
    add = models.add_parser(
        "add", help="register a local checkpoint, LoRA, ControlNet, VAE, embeddings, IP-Adapter or annotator; "
        "what it is is read from its tensors (flags override)")
    add.add_argument("path", help="a single-file .safetensors (or a .pt embedding), or a diffusers "
                     "folder (annotators: the folder or file `kiln.preprocess.ANNOTATED` names)")
    add.add_argument("--air", help="identifier, e.g. civitai:4201@130072 (default: local:<file "
                     "name>@<short content hash>)")
    add.add_argument("--architecture", choices=["sd1x", "sdxl", "flux", "sd3"],
                     help="the base model family (default: detected; SD 2.x is sd1x; annotators "
                     "serve both: either value works)")
    add.add_argument("--category", choices=["checkpoint", "lora", "lycoris", "controlnet", "vae",
                                            "embeddings", "ipadapter", "annotator"],
                     help="default: detected from the file")
    add.add_argument("--type", help="base, inpainting or refiner (checkpoints; default: detected)")
    add.add_argument("--config", help="diffusers config folder for a single-file checkpoint "
                     "(default: one Kiln writes from the checkpoint's shapes)")
    add.add_argument("--image-encoder", metavar="PATH",
                     help="for an IP-Adapter: the CLIP image encoder it was trained with: a transformers "
                     "CLIPVisionModelWithProjection folder (IP-Adapter's models/image_encoder), or a ViT-L/H/bigG "
                     "file as ComfyUI keeps it in models/clip_vision/")
    add.add_argument("--base", metavar="AIR",
                     help="for a FLUX transformer file (ComfyUI's diffusion_models/ download): the "
                     "registered FLUX diffusers folder whose text encoders, tokenizers and VAE it runs with")
    add.add_argument("--prediction", choices=["epsilon", "v_prediction"],
                     help="what a checkpoint's UNet predicts, where the file does not say "
                     "(SD 2.x: 768 models v_prediction, 512-base ones epsilon)")
    add.add_argument("--no-load-check", action="store_true",
                     help="register a checkpoint without loading it first")
    add.add_argument("--name")
    add.add_argument("--version")
    add.add_argument("--tags", help="comma-separated")
    add.add_argument("--conditioning", help="canny, depth, ... (ControlNets; default: from the file "
                     "name); for annotators, the preprocessor served: depth, seg, openpose, "
                     "normalbae, softedge or lineart_anime")
    add.add_argument("--comment")
    add.add_argument("--default-width", type=int)
    add.add_argument("--default-height", type=int)
    add.add_argument("--default-steps", type=int)
    add.add_argument("--default-cfg", type=float)
    add.add_argument("--default-scheduler")
    add.set_defaults(func=cmd_models_add)
    import_ = models.add_parser(
        "import", help="register every model of a ComfyUI or AUTOMATIC1111 folder, in place "
        "(checkpoints, loras/Lora, controlnet/ControlNet, vae/VAE, embeddings, ipadapter with clip_vision)")
    import_.add_argument("folder", help="the ComfyUI or stable-diffusion-webui folder, or its models/")
    import_.set_defaults(func=cmd_models_import)
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
    except KilnError as exc:  # e.g. the database does not answer
        print(f"kiln: {exc.message}", file=sys.stderr)
        return 1
