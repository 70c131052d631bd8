"""digitrec describe: every config group and its options, and one option's arguments.

Nothing here is a copy: an option's description is the first sentence of its YAML file's leading
comment, its arguments are the signature of the class its `_target_` names (inspect.signature, the
class's own types and defaults), its values and their comments are the YAML file's.
"""

from __future__ import annotations

import difflib
import inspect
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from digitrec.errors import DigitrecError
from digitrec.targets import locate

USAGE = """usage: digitrec describe [GROUP | GROUP=OPTION]

Every config group with its options, each with a one-line description; or one option in full: its
class, the class's arguments (types and defaults from its signature) and the values the option sets.

examples:
  digitrec describe                   # every group and option
  digitrec describe model/scheduler   # the options of one group
  digitrec describe model/net=cnn     # the CNN's arguments, types, defaults and the values cnn.yaml sets
"""

# Hydra's own settings (run directories, callbacks) are not a choice on the command line.
HIDDEN_GROUPS = ("hydra",)
# The widest type a table shows (Lightning's precision is a Literal of 20 strings).
TYPE_WIDTH = 40
# The `_target_` of configs/model/net/custom.yaml: the class is the user's own.
UNSET = "???"


def config_root() -> Path:
    return Path(str(resources.files("digitrec.configs")))


def groups() -> dict[str, list[str]]:
    """Every config group (folder of YAML files, e.g. model/net) -> its options (the file names)."""
    root = config_root()
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.yaml")):
        group = path.parent.relative_to(root).as_posix()
        if group != "." and group not in HIDDEN_GROUPS:
            found.setdefault(group, []).append(path.stem)
    return dict(sorted(found.items()))


def leading_comment(text: str) -> list[str]:
    """The comment lines at the top of a YAML file (Hydra's `# @package` line left out)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line[1:].strip())
    return lines


def first_sentence(lines: list[str], limit: int = 110) -> str:
    """Up to the first full stop outside parentheses (the comment's own summary), within its first
    paragraph and before an example command ("...:   digitrec train trainer=cpu")."""
    paragraph = []
    for line in lines:
        if not line or line.startswith(("digitrec ", "pip ")):
            break
        paragraph.append(line)
    text = " ".join(paragraph).strip()
    example = text.find("   digitrec ")
    if example > 0:
        text = text[:example]
    if text.endswith(":"):
        text = text.rstrip(" :") + "."
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and char == "." and (i + 1 == len(text) or text[i + 1] == " ") and text[i - 3 : i + 1] not in ("e.g.", "i.e."):
            text = text[: i + 1]
            break
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def option_file(group: str, option: str) -> Path:
    options = groups()
    if group not in options:
        close = difflib.get_close_matches(group, options, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise DigitrecError(f"no config group {group!r}: {hint}digitrec describe lists them")
    if option not in options[group]:
        raise DigitrecError(f"no option {option!r} in {group}: choose one of {', '.join(options[group])}")
    return config_root() / group / f"{option}.yaml"


def describe_groups(only: list[str] | None = None) -> str:
    """The groups (all, or `only` and their subgroups) with their options, one line each."""
    lines = []
    for group, options in groups().items():
        if only is not None and not any(group == g or group.startswith(f"{g}/") for g in only):
            continue
        lines.append(f"{group}:")
        width = max(len(o) for o in options)
        for option in options:
            text = (config_root() / group / f"{option}.yaml").read_text()
            lines.append(f"  {option.ljust(width)}  {first_sentence(leading_comment(text)) or '(no description)'}")
    return "\n".join(lines) + "\n"


def key_comments(text: str) -> dict[str, str]:
    """Top-level key -> its comment in the YAML file (the lines just above it, and after it on its line)."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in text.splitlines():
        match = re.match(r"([A-Za-z_]\w*):(.*)", line)
        if line.startswith("#") and not line.startswith("# @package"):
            above.append(line[1:].strip())
            continue
        if match:
            key, rest = match.groups()
            inline = rest.split(" #", 1)[1].strip() if " #" in rest else ""
            comments[key] = " ".join([*above, inline]).strip()
        above = []
    return comments


def record_of(data: Any) -> dict[str, Any] | None:
    """The `_target_` record an option file holds: the file itself, or its one top-level key's
    value (`# @package model` files such as scheduler/cosine.yaml put theirs under `scheduler:`)."""
    if isinstance(data, dict) and "_target_" in data:
        return data
    if isinstance(data, dict) and len(data) == 1:
        (value,) = data.values()
        if isinstance(value, dict) and "_target_" in value:
            return value
    return None


def shown(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "(required)"
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip() if not callable(value) else repr(value)


def describe_option(group: str, option: str) -> str:
    path = option_file(group, option)
    text = path.read_text()
    header = leading_comment(text)
    data = yaml.safe_load(text) or {}
    lines = [f"{group}={option}  ({path.relative_to(config_root().parent).as_posix()})"]
    lines += [f"  {line}" for line in header]
    record = record_of(data)
    if record is None or record.get("_target_") in (None, UNSET):
        body = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if record is not None:
            lines.append("  the class is yours: model.net._target_=my_package.MyNet, its arguments as +model.net.NAME=VALUE")
        lines += ["", "sets:", *(f"  {line}" for line in body)]
        return "\n".join(lines) + "\n"

    target = record["_target_"]
    cls = locate(target)
    try:
        parameters = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    if record.get("_partial_"):  # the first argument is given by digitrec (the parameters, the optimiser)
        parameters = parameters[1:]
    kinds = inspect.Parameter
    parameters = [p for p in parameters if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)]
    comments = key_comments(text)
    values = {k: v for k, v in record.items() if not k.startswith("_") and k != "defaults"}
    # Arguments filled by a config group of their own (model/net for the model's `net`).
    composed = {next(iter(e)): next(iter(e.values())) for e in record.get("defaults", []) if isinstance(e, dict)}
    for name, choice in composed.items():
        values.setdefault(name, f"{group}/{name}={choice}")
    rows = [("argument", "type", "default", f"{option}.yaml", "")]
    for p in parameters:
        annotation = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
        rows.append(
            (
                p.name,
                "" if p.annotation is kinds.empty else annotation if len(annotation) <= TYPE_WIDTH else annotation[: TYPE_WIDTH - 1] + "…",
                shown(p.default),
                (values[p.name] if p.name in composed else shown(values[p.name])) if p.name in values else "",
                comments.get(p.name, ""),
            )
        )
    rows += [
        (k, "", "", shown(v), comments.get(k) or "read by digitrec, not an argument of the class")
        for k, v in values.items()
        if k not in {p.name for p in parameters}
    ]
    lines += ["", f"class: {target}", ""]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + (f"  {row[4]}" if row[4] else ""))
    return "\n".join(line.rstrip() for line in lines) + "\n"


def defaults_groups(config_name: str) -> list[str]:
    """The config groups a primary config (train.yaml, eval.yaml) composes, from its defaults list."""
    data = yaml.safe_load((config_root() / f"{config_name}.yaml").read_text())
    names = [next(iter(entry)) for entry in data.get("defaults", []) if isinstance(entry, dict)]
    return [name for name in names if name not in HIDDEN_GROUPS]


def config_help(config_name: str) -> str:
    """`digitrec train --help` / `digitrec eval --help`: the command's own groups and its top-level keys."""
    text = (config_root() / f"{config_name}.yaml").read_text()
    comments = key_comments(text)
    data = yaml.safe_load(text)
    keys = [k for k in data if k not in ("defaults", "hydra")]
    width = max(len(k) for k in keys)
    lines = [f"usage: digitrec {config_name} [GROUP=OPTION ...] [KEY=VALUE ...]", ""]
    lines += [f"  {line}" for line in leading_comment(text)]
    lines += ["", "settings (KEY=VALUE):"]
    lines += [f"  {k.ljust(width)}  {shown(data[k]).ljust(8)}  {first_sentence([comments.get(k, '')], 200)}".rstrip() for k in keys]
    lines += ["", "config groups (GROUP=OPTION; digitrec describe GROUP=OPTION shows an option's arguments):", ""]
    lines.append(describe_groups(defaults_groups(config_name)).rstrip())
    lines += [
        "",
        f"Every value of the composed config can be overridden: digitrec {config_name} --cfg job prints it.",
        f"Hydra's own flags (-m, -cd, --cfg, --info): digitrec {config_name} --hydra-help.",
    ]
    return "\n".join(lines) + "\n"


def main(args: list[str]) -> int:
    if args and args[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0
    if len(args) > 1:
        raise DigitrecError(f"describe takes one GROUP or GROUP=OPTION, got {len(args)} arguments ({' '.join(args)})")
    if not args:
        print(describe_groups(), end="")
        return 0
    group, sep, option = args[0].strip("/").partition("=")
    if not sep:
        option_file(group, groups().get(group, [""])[0])  # the group's existence, with its one-line error
        print(describe_groups([group]), end="")
        return 0
    print(describe_option(group, option), end="")
    return 0
