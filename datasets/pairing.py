"""Pairing files by name: which mask / exemplar / sketch / completion goes with which image.

One rule for every tool (test.py's paired masks, exemplar folders and ``--pred`` / ``--gt``
folders, and the application scripts' ``--mask`` / ``--exemplar`` / ``--sketch`` folders):

* every file of a role has a **key**, the part of its name (relative path without extension)
  that its role's **pattern** marks ``{name}``. The default pattern of every role is ``{name}``:
  ``a/01.png`` pairs with ``a/01.*`` in the other folders. Patterns for the common naming of
  paired sets, given as ``--pair-by ROLE=PATTERN ...``:

  ==============================================  =============================================
  files                                           option
  ==============================================  =============================================
  ``x.png`` + ``x_mask.png``                      ``--pair-by mask={name}_mask``
  ``1_real.png`` + ``1_mask.png`` + ``1_exe.png``  ``--pair-by image={name}_real mask={name}_mask
                                                  exemplar={name}_exe``
  ``img/1.png`` + ``masks/mask_1.png``            ``--pair-by mask=mask_{name}``
  ==============================================  =============================================

  A file whose name does not fit its role's pattern is not part of that role; when two roles
  share a folder, a file that fits another role's more specific pattern (``1_mask``) is not
  taken by a plain ``{name}`` role.
* a key missing from a folder is looked up by its last path component when that is unique
  there (``a/01`` finds ``01.*``).
* a missing partner is one sentence that names the file it looked for and, when the folder's
  names suggest one, the ``--pair-by`` option that would pair them.
"""
from __future__ import annotations

import os
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type

from datasets.errors import DatasetError
from datasets.imaging import IMAGE_EXTENSIONS, rel_stem, scan_images

__all__ = ["NAME", "NamePattern", "NamedFiles", "FolderPairing", "parse_pair_by",
           "suggest_pair_by", "suggest_roles", "roles_named", "PAIR_BY_HELP", "ROLE_WORDS"]

#: The placeholder of the key in a pattern.
NAME = "{name}"

#: Words in a name's fixed part that say which role a file plays (``1_real`` is an image,
#: ``1_mask`` a mask, ``1_out`` a completion). ``--pair-by`` hints only give a role a suffix that
#: names it or no other role, so ``1_mask`` is never suggested as ground truth.
ROLE_WORDS: Dict[str, Tuple[str, ...]] = {
    "image": ("real", "gt", "image", "img", "orig", "original", "target", "input", "clean",
              "truth", "groundtruth"),
    "mask": ("mask", "masks", "hole", "holes", "masked"),
    "exemplar": ("exe", "exemplar", "ref", "reference", "style"),
    "pred": ("out", "output", "pred", "result", "comp", "completed", "completion", "inpainted",
             "fake", "fill", "filled"),
    "sketch": ("sketch", "edge", "edges", "line", "lines"),
}
_ROLE_ALIAS = {"gt": "image"}

PAIR_BY_HELP = ("how file names pair across folders, as ROLE=PATTERN with {name} standing for "
                "the shared part, e.g. mask={name}_mask (x.png + x_mask.png) or image={name}_real "
                "mask={name}_mask exemplar={name}_exe (1_real.png + 1_mask.png + 1_exe.png); "
                "default {name} for every role (same name, any extension)")


def roles_named(text: str) -> set:
    """The roles whose words (ROLE_WORDS) appear as tokens of ``text`` (e.g. ``'_mask'`` ->
    ``{'mask'}``; ``'_unmasked'`` names none)."""
    tokens = {t for t in re.split(r"[^a-z0-9]+", text.lower()) if t}
    return {role for role, words in ROLE_WORDS.items() if tokens & set(words)}


def _fits_role(affix: str, role: str) -> bool:
    """False when ``affix`` names another role and not ``role`` itself."""
    named = roles_named(affix)
    return not named or _ROLE_ALIAS.get(role, role) in named


class NamePattern:
    """``prefix{name}suffix``: maps a file stem to its key and back."""

    def __init__(self, template: str = NAME):
        if not isinstance(template, str) or template.count(NAME) != 1:
            raise ValueError(f"pattern {template!r} must contain {NAME} exactly once")
        self.template = template
        self.prefix, self.suffix = template.split(NAME)

    @property
    def generic(self) -> bool:
        return self.template == NAME

    def key(self, stem: str) -> Optional[str]:
        """The key of a stem (relative path without extension), or None if it does not fit."""
        stem = stem.replace(os.sep, "/")
        head, base = os.path.split(stem)
        # The prefix applies to the file's own name, so folders keep pairing (a/mask_01 -> a/01).
        if not (base.startswith(self.prefix) and base.endswith(self.suffix)) or \
                len(base) <= len(self.prefix) + len(self.suffix):
            return None
        core = base[len(self.prefix):len(base) - len(self.suffix)]
        return f"{head}/{core}" if head else core

    def stem(self, key: str) -> str:
        head, base = os.path.split(key)
        name = f"{self.prefix}{base}{self.suffix}"
        return f"{head}/{name}" if head else name

    def __repr__(self) -> str:
        return f"NamePattern({self.template!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, NamePattern) and other.template == self.template


def parse_pair_by(values: Optional[Iterable[str]], roles: Sequence[str],
                  aliases: Optional[Mapping[str, str]] = None,
                  option: str = "--pair-by") -> Dict[str, NamePattern]:
    """``["mask={name}_mask", ...]`` -> ``{role: NamePattern}`` for every role in ``roles``
    (default ``{name}``); raises ValueError with one sentence for a bad entry."""
    aliases = dict(aliases or {})
    out = {r: NamePattern() for r in roles}
    seen = set()
    for v in values or ():
        role, sep, template = str(v).partition("=")
        role = aliases.get(role.strip(), role.strip())
        if not sep or role not in out:
            raise ValueError(f"{option} {v!r} is not ROLE=PATTERN with ROLE one of "
                             f"{', '.join(list(roles) + list(aliases))} (e.g. {option} "
                             f"mask={NAME}_mask).")
        if role in seen:
            raise ValueError(f"{option} gives the pattern of '{role}' twice; give it once.")
        seen.add(role)
        try:
            out[role] = NamePattern(template.strip())
        except ValueError:
            raise ValueError(f"{option} {v!r}: the pattern must contain {NAME} exactly once "
                             f"(e.g. {role}={NAME}_{role}).") from None
    return out


def pairing_key(name: str, image_pattern: "NamePattern") -> str:
    """The pairing key of an image file name (a path relative to its folder): what
    ``image_pattern`` captures of its stem, or the whole stem when the pattern does not match."""
    stem = rel_stem(name.replace(os.sep, "/"))
    key = image_pattern.key(stem)
    return stem if key is None else key


class NamedFiles:
    """The files of one role in a folder, by key.

    Args:
        root: the folder (scanned recursively for images) — or ``names`` relative to it.
        pattern: the role's :class:`NamePattern`.
        what: the role in messages ("mask", "exemplar", ...).
        option: the flag the folder came from, for messages (e.g. "--mask").
        exclude: patterns of other roles stored in the same folder (see the module docstring).
        error: exception class for user errors (DatasetError, MaskError, CLIError ...).
        role: the role's name in ``--pair-by`` hints (default: ``what``).
    """

    def __init__(self, root: str, pattern: Optional[NamePattern] = None, what: str = "file",
                 option: Optional[str] = None, *, exclude: Sequence[NamePattern] = (),
                 error: Type[Exception] = DatasetError, names: Optional[Sequence[str]] = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, role: Optional[str] = None):
        self.root, self.what, self.error, self.role = root, what, error, role or what
        self.pattern = pattern or NamePattern()
        self.option = option or f"{what} folder"
        names = scan_images(root, extensions) if names is None else list(names)
        self.stems = [rel_stem(n) for n in names]
        specific = [p for p in exclude if not p.generic and p != self.pattern]
        # Stems another role's specific pattern claims: never offered to this role in hints.
        self.others_stems = {s for s in self.stems if any(p.key(s) is not None for p in specific)}
        self.by_key: Dict[str, str] = {}
        for n, stem in zip(names, self.stems):
            if self.pattern.generic and any(p.key(stem) is not None for p in specific):
                continue                                  # another role's file
            key = self.pattern.key(stem)
            if key is None:
                continue
            if key in self.by_key:
                raise error(f"Two {what} files in '{root}' share the name '{key}' "
                            f"('{self.by_key[key]}', '{n}'); keep one, since files are paired by "
                            f"name without extension.")
            self.by_key[key] = n
        self.by_base: Dict[str, Optional[str]] = {}
        for key, n in self.by_key.items():
            base = os.path.basename(key)
            self.by_base[base] = None if base in self.by_base else n   # None: ambiguous

    def __len__(self) -> int:
        return len(self.by_key)

    def keys(self) -> List[str]:
        return list(self.by_key)

    def get(self, key: str) -> Optional[str]:
        """Path of the file for ``key`` (exact, else by the unique last component), or None."""
        key = key.replace(os.sep, "/")
        found = self.by_key.get(key) or self.by_base.get(os.path.basename(key))
        return os.path.join(self.root, found) if found else None

    def path_for(self, key: str, image_pattern: Optional[NamePattern] = None,
                 image_role: str = "image") -> str:
        path = self.get(key)
        if path is None:
            raise self.error(self.missing_message([key], image_pattern, image_role, [key]))
        return path

    def missing(self, keys: Iterable[str]) -> List[str]:
        return [k for k in keys if self.get(k) is None]

    def missing_message(self, missing: Sequence[str], image_pattern: Optional[NamePattern] = None,
                        image_role: str = "image", all_keys: Optional[Sequence[str]] = None) -> str:
        """One sentence: what is missing, the file looked for, and a --pair-by hint if any."""
        image_pattern = image_pattern or NamePattern()
        all_keys = list(all_keys or missing)
        first = missing[0]
        shown = ", ".join(f"'{k}'" for k in missing[:3]) + \
            (f" (+{len(missing) - 3} more)" if len(missing) > 3 else "")
        msg = (f"{self.option} '{self.root}' has no {self.what} for {len(missing)} of "
               f"{len(all_keys)} image(s) ({shown}): looked for '{self.pattern.stem(first)}.*'")
        if image_pattern.stem(first) != first:
            msg += f" (the partner of '{image_pattern.stem(first)}.*')"
        hint = suggest_pair_by([image_pattern.stem(k) for k in all_keys],
                               [s for s in self.stems if s not in self.others_stems],
                               image_role, self.role)
        if hint:
            msg += f"; the names there suggest --pair-by {hint}"
        else:
            msg += (f"; files are paired by name without extension ({self.what} pattern "
                    f"'{self.pattern.template}', see --pair-by)")
        return msg + "."


def suggest_pair_by(image_stems: Sequence[str], other_stems: Sequence[str], image_role: str,
                    other_role: str, tries: int = 5) -> Optional[str]:
    """A ``--pair-by`` value that pairs at least half of ``image_stems`` with ``other_stems`` by
    a shared prefix and role suffixes (``1_real`` / ``1_mask``), or None. A suffix that names
    another role (ROLE_WORDS) is never given to a role (``gt={name}_mask`` is not suggested);
    among equally good suffixes, the ones that name their roles win."""
    if not image_stems or not other_stems:
        return None
    others = set(other_stems)
    best: Tuple[int, Optional[str]] = (0, None)
    for stem in image_stems[:tries]:
        for other in other_stems:
            if stem == other:
                continue
            p = os.path.commonprefix([stem, other])
            p = p.rstrip("_-. ")                 # the separator belongs to the role's suffix
            if not p:
                continue
            a, b = stem[len(p):], other[len(p):]
            # Role suffixes start with a separator (x / x_mask, 1_real / 1_mask): 004 / 001
            # share "00" but are different images, not one image in two roles.
            if any(t and t[0] not in "_-. " for t in (a, b)):
                continue
            if "/" in a or "/" in b or len(a) > 16 or len(b) > 16:
                continue
            if not (_fits_role(a, image_role) and _fits_role(b, other_role)):
                continue
            hits = sum(1 for s in image_stems if s.endswith(a)
                       and (s[:len(s) - len(a)] if a else s) + b in others)
            # Among equally good suffixes, ones that name their roles (_mask for masks) win.
            score = 4 * hits + 2 * (bool(roles_named(b)) or other_role[:3].lower() in b.lower()) \
                + bool(a and roles_named(a))
            if score > best[0]:
                parts = ([f"{image_role}={NAME}{a}"] if a else []) + [f"{other_role}={NAME}{b}"]
                best = (score, " ".join(parts))
    return best[1] if (best[0] // 4) * 2 >= len(image_stems) else None


def suggest_roles(stems: Sequence[str], roles: Sequence[str]) -> Optional[str]:
    """For one folder that holds every role (``1_real``, ``1_mask``, ``1_out``): the
    ``--pair-by`` patterns of ``roles`` from the suffixes that name them, e.g. ``gt={name}_real
    pred={name}_out``; None unless every role finds a suffix shared by at least two names (or
    all of them)."""
    counts: Dict[str, int] = {}
    for stem in stems:
        base = stem.replace(os.sep, "/").rsplit("/", 1)[-1]
        cut = max(base.rfind(c) for c in "_-. ")
        if cut > 0:
            counts[base[cut:]] = counts.get(base[cut:], 0) + 1
    parts = []
    for role in roles:
        named = [(n, suffix) for suffix, n in counts.items()
                 if _ROLE_ALIAS.get(role, role) in roles_named(suffix)
                 and len(roles_named(suffix)) == 1 and n >= min(2, len(stems))]
        if not named:
            return None
        parts.append(f"{role}={NAME}{max(named)[1]}")
    return " ".join(parts)


class FolderPairing:
    """The patterns and folders of every role of one command (e.g. inpaint.py's image, mask,
    exemplar and sketch): which pattern a role uses, and which other roles share its folder."""

    def __init__(self, patterns: Mapping[str, NamePattern],
                 folders: Optional[Mapping[str, Optional[str]]] = None, image_role: str = "image"):
        self.patterns = dict(patterns)
        self.folders = {r: f for r, f in dict(folders or {}).items() if f}
        self.image_role = image_role

    def pattern(self, role: str) -> NamePattern:
        return self.patterns.get(role) or NamePattern()

    def exclude(self, role: str, folder: str) -> List[NamePattern]:
        """Patterns of the other roles whose folder is ``folder``."""
        real = os.path.realpath(folder)
        return [self.pattern(r) for r, f in self.folders.items()
                if r != role and os.path.isdir(f) and os.path.realpath(f) == real]

    def key_of_file(self, role: str, path: str) -> str:
        """The key of a single file given for ``role`` (its stem without the role's pattern)."""
        stem = rel_stem(os.path.basename(path))
        key = self.pattern(role).key(stem)
        return stem if key is None else key
