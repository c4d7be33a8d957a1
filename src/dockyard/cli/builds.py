"""``dockyard build ...`` and ``dockyard app hook|hooks|unhook``: continuous integration
(paas/README.md "Builds")."""

from __future__ import annotations

import argparse
import sys

from dockyard.cli.client import Api, CliError
from dockyard.cli.output import emit

# typing costs ~2 ms of every command's start-up; mypy reads this name as typing's own
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HOOK_COLUMNS = [
    ("ID", lambda h: h["id"]),
    ("REPO", lambda h: h["repo"]),
    ("BRANCH", lambda h: h["branch"]),
    ("STACK", lambda h: h["stack"]),
    ("AUTO-DEPLOY", lambda h: "yes" if h["auto_deploy"] else "no"),
    ("DOCKERFILE", lambda h: h["dockerfile"]),
]
BUILD_COLUMNS = [
    ("ID", lambda b: b["id"]),
    ("APP", lambda b: b["app"]),
    ("REF", lambda b: b["ref"]),
    ("COMMIT", lambda b: (b["commit"] or "-")[:7]),
    ("STATUS", lambda b: b["status"]),
    ("HOST", lambda b: b["host"] or "-"),
    ("IMAGE", lambda b: b["image"] or "-"),
    ("WHO", lambda b: b["created_by"]),
    ("WHEN", lambda b: b["created_at"]),
]
WAIT = 30.0  # seconds each long poll of --follow is held


def hook(api: Api, a: argparse.Namespace) -> None:
    body = {"repo": a.repo, "branch": a.branch, "stack": a.stack, "auto_deploy": a.auto_deploy,
            "dockerfile": a.dockerfile}  # fmt: skip
    if a.secret is not None:
        body["secret"] = a.secret
    h = api.post(f"/apps/{a.app}/hooks", body)
    if a.format == "json":
        emit(h, "json", HOOK_COLUMNS)
        return
    print(f"hook {h['id']} of {h['app']}: {h['repo']} {h['branch']} -> stack {h['stack']}")
    print(f"webhook URL: {api.url}{h['url']}")
    print(f"secret:      {h['secret']}")
    print("give both to the git host (GitHub: content type application/json, this secret; "
          "GitLab: the secret as the token). The secret is not shown again.")  # fmt: skip


# a build's log is what its Dockerfile printed: terminal escapes (a title, a cleared
# screen, a hidden line) are shown, not obeyed; newlines and tabs stay
_CONTROLS = {c: "?" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if c not in (9, 10)}
_CONTROLS[13] = ""


def printable(text: str) -> str:
    return text.translate(_CONTROLS)


def logs(api: Api, a: argparse.Namespace) -> None:
    """The log so far; with --follow, as it comes until the build ends (exit 1 unless
    it succeeded)."""
    offset, path = 0, f"/builds/{a.id}/log"
    while True:
        wait = WAIT if a.follow else 0.0
        status, part = api.long_poll(path, {"offset": offset, "wait": wait}, wait)
        if status != 200:
            raise CliError(f"build {a.id} does not exist; see `dockyard build list`")
        sys.stdout.write(printable(part["text"]))
        sys.stdout.flush()
        offset = part["offset"]
        if part["done"] or (not a.follow and not part["text"]):
            break
    if a.follow:
        b = api.get(f"/builds/{a.id}")
        if b["status"] != "succeeded":
            raise CliError(f"build {a.id} {b['status']}: {printable(b['reason'] or '-')}")
        print(f"build {a.id} succeeded: {b['tag']} ({b['image']})"
              + (f", deploy {b['deploy']}" if b["deploy"] else ""), file=sys.stderr)  # fmt: skip
        if b["reason"]:
            print(printable(b["reason"]), file=sys.stderr)


def start(api: Api, a: argparse.Namespace) -> None:
    body: dict[str, Any] = {"ref": a.ref, "deploy": a.deploy}
    if a.hook:
        body["hook"] = a.hook
    b = api.post(f"/apps/{a.app}/builds", body)
    if not a.follow:
        emit(b, a.format, BUILD_COLUMNS)
        return
    print(f"build {b['id']} of {b['app']} {b['ref']}: {b['status']}", file=sys.stderr)
    logs(api, argparse.Namespace(id=b["id"], follow=True))


def _show(api: Api, a: argparse.Namespace) -> None:
    emit(api.get(f"/builds/{a.id}"), a.format, BUILD_COLUMNS)


def _list(api: Api, a: argparse.Namespace) -> None:
    path = f"/builds?app={a.app}" if a.app else "/builds"
    emit(api.get(path), a.format, BUILD_COLUMNS)


def hook_parsers(verbs: Any, fmt: argparse.ArgumentParser) -> None:
    """``app hook|hooks|unhook``, under the ``app`` noun (cli/apps.py)."""
    p = verbs.add_parser("hook", parents=[fmt], help="a git webhook that builds a branch")
    p.add_argument("app")
    p.add_argument("--repo", required=True, help="what build hosts clone (https/git/ssh URL)")
    p.add_argument("--branch", required=True)
    p.add_argument("--stack", required=True, help="the app's stack a build deploys to")
    p.add_argument("--auto-deploy", action="store_true", help="deploy each successful build")
    p.add_argument("--secret", help="the HMAC secret / GitLab token (default: one made for you)")
    p.add_argument("--dockerfile", default="Dockerfile", help="its path in the repository")
    p.set_defaults(run=hook)
    p = verbs.add_parser("hooks", parents=[fmt], help="an app's git webhooks (no secrets)")
    p.add_argument("app")
    p.set_defaults(
        run=lambda api, a: emit(api.get(f"/apps/{a.app}/hooks"), a.format, HOOK_COLUMNS)
    )
    p = verbs.add_parser("unhook", help="delete a git webhook (its builds stay)")
    p.add_argument("app")
    p.add_argument("id")
    p.set_defaults(
        run=lambda api, a: (
            api.delete(f"/apps/{a.app}/hooks/{a.id}"),
            print(f"hook {a.id} deleted"),
        )
    )


def add_parsers(sub: Any, fmt: argparse.ArgumentParser) -> None:
    grp = sub.add_parser("build", help="builds: a commit built into an image, then deployed")
    verbs = grp.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("list", parents=[fmt], help="newest first")
    p.add_argument("app", nargs="?")
    p.set_defaults(run=_list)
    p = verbs.add_parser("show", parents=[fmt])
    p.add_argument("id")
    p.set_defaults(run=_show)
    p = verbs.add_parser("logs", help="its log; --follow: live, exit 1 unless it succeeds")
    p.add_argument("id")
    p.add_argument("--follow", action="store_true")
    p.set_defaults(run=logs)
    p = verbs.add_parser("start", parents=[fmt], help="build a ref by hand")
    p.add_argument("app")
    p.add_argument("--ref", required=True,
                   help="a branch or a tag (built as it is now), or a commit id (built only "
                   "if it is on the hook's branch)")  # fmt: skip
    p.add_argument("--hook", help="the hook's id (default: the app's only hook)")
    p.add_argument("--deploy", action=argparse.BooleanOptionalAction, default=None,
                   help="deploy it when built (default: as the hook's --auto-deploy)")  # fmt: skip
    p.add_argument("--follow", action="store_true", help="then follow its log (as build logs)")
    p.set_defaults(run=start)
    p = verbs.add_parser("cancel", parents=[fmt])
    p.add_argument("id")
    p.set_defaults(
        run=lambda api, a: emit(api.post(f"/builds/{a.id}/cancel"), a.format, BUILD_COLUMNS)
    )
