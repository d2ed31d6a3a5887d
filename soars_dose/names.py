"""ROI names: normalisation and matching onto canonical OAR names.

Institutions write the same organ in many ways ("L Parotid", "Parotid Lt",
"LeftParotid", "PAROTID LEFT", "parotid (L)"...).  This module maps such ROI
names onto one canonical name per organ -- AAPM TG-263 where it has one
(``Brainstem``, ``Parotid_L``, ``OpticNrv_R``, ``Glnd_Submand_L``...), a short
custom name where it has none (``BasalGanglia_L``, ``Epiglottis``,
``Bone_Mandible_L``, ``Orbit_R``).

How a name is matched
---------------------
:meth:`AliasTable.match` applies these rules in order; the first that applies
decides:

1. empty name -> ``unmatched``;
2. ``exact`` override (whole name, case-insensitive, runs of white space
   collapsed) -> ``oar`` / ``external``;
3. the name is tokenised (see :func:`tokenize`): camelCase, letter/digit
   boundaries and every non-alphanumeric character (space, ``_``, ``-``,
   ``.``, brackets...) split tokens; tokens are lower-cased; an acronym's
   plural ("PCMs") stays one token.  The *key* of a token list is its
   tokens joined without separator, so "Brain Stem", "brain_stem" and
   "BrainStem" share the key ``brainstem``; a one-letter token stays apart
   (``constrictor|s`` for "Constrictor S"), so a plural such as
   "Constrictors" never reads as a part;
4. key in ``ignore``, or a first token ``couch`` -> ``ignored``;
5. a ``+`` anywhere -> ``derived`` (expansions and unions such as
   ``Brainstem+3mm``);
6. name starting with PTV/CTV/GTV/ITV -> ``target`` (never mapped; callers
   skip these quietly);
7. organ lookup: side tokens (``l``, ``lt``, ``lft``, ``left``, ``r``,
   ``rt``, ``rgt``, ``right``) are taken off the start and the end of the
   token list; the remaining key is looked up among the organ bases and their
   synonyms.  When that finds nothing and no separate side token was present,
   a side glued to the first or last token ("LeftParotid" written all in
   capitals, "parotidl", "PAROTIDLEFT") is tried; it is accepted only when
   exactly one reading names a lateral organ.  Then

   * lateral organ with one side -> ``Base_L`` / ``Base_R``;
   * midline organ without side -> ``Base``;
   * ``optional`` organ: either;
   * a lateral organ without side, a midline organ with a side, or two
     different sides -> ``unmatched`` with the reason (never guessed);
   * an organ of kind ``union`` (``Musc_Constrict``: "Constrictors",
     "PCMs") -> ``union``, of kind ``out_of_scope`` (Bladder, Kidney_L...)
     -> ``out_of_scope``: known, but mapped onto no canonical name
     (:attr:`NameMatch.known` holds the known name);

   When no organ matched, both sides of a lateral organ as one structure
   ("Parotids", "Lenses", "Both Eyes", "Parotid bilat") -> ``union``;

8. no organ found, but a token marks a derived structure (``prv``, ``opt``,
   ``avoid``, ``ring``, ``crop``, a margin such as ``3mm``, a PTV/CTV/GTV
   token after the organ, a leading ``z``/``zz``/``x``...) -> ``derived``;
9. otherwise ``unmatched`` ("not in the alias table").

Alias file format
-----------------
The packaged table lives in ``soars_dose/data/aliases.yaml``; a user file of
the same format extends or overrides it (:meth:`AliasTable.load`)::

    organs:                      # canonical base name -> entry
      Parotid:
        lateral: true            # true | false | optional
        synonyms: [Parotid Gland, Glnd Parotid]
      External:
        lateral: false
        kind: external           # oar (default) | external
        synonyms: [BODY, Skin, Outline]
    exact:                       # literal overrides: ROI name -> canonical
      "Parotid Sup L": Parotid_L
    ignore: [Couch, Isocenter]   # names skipped quietly

``organs``
    Mapping of canonical *base* names (letters, digits and ``_``) to entries.
    ``lateral: true`` makes the canonical names ``Base_L`` and ``Base_R``
    (the base alone is never produced); ``false`` makes ``Base``;
    ``optional`` makes all three (e.g. ``Bone_Mandible``,
    ``Bone_Mandible_L``, ``Bone_Mandible_R``).  ``synonyms`` list base names
    only, without side; the base name itself is always a synonym.  ``kind``
    is ``oar`` (default), ``external`` (the patient outline), ``union``
    (several OARs as one structure) or ``out_of_scope`` (a known organ
    outside head and neck); a user file that redefines a union or
    out-of-scope organ without ``kind`` makes it an ``oar``.
``exact``
    Mapping of literal ROI names to canonical names the table produces.
``ignore``
    Names (compared by key) that are neither OARs nor targets.

Every key is optional.  Merging a user file: a new organ needs ``lateral``;
for an organ already in the table, the given ``lateral``/``kind`` replace the
old ones and the ``synonyms`` are added.  A user synonym that the packaged
table gives to another organ moves to the user's organ.  ``exact`` and
``ignore`` entries are added.  Two organs claiming the same synonym within
one file, duplicate keys, unknown keys, wrong types, a synonym carrying a side
and canonical names produced twice are errors
(:class:`~soars_dose.errors.InputError`, naming the file and line).
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import pandas as pd
import yaml

from soars_dose.case import DUPLICATE, EMPTY, REFERENCE, Case, RoiOutcome
from soars_dose.config_files import YamlReader, packaged_text, user_text
from soars_dose.errors import InputError, NameClashError, SoarsDoseError
from soars_dose.structures import Structure

__all__ = [
    "AliasTable",
    "describe_rois",
    "suggest",
    "NameMatch",
    "NameMatchReport",
    "OrganEntry",
    "match_names",
    "name_key",
    "tokenize",
]

MatchKind = Literal["oar", "external", "union", "out_of_scope", "target", "derived",
                    "unmatched", "ignored"]

_SIDE_TOKENS: dict[str, str] = {
    "l": "L", "lt": "L", "lft": "L", "left": "L",
    "r": "R", "rt": "R", "rgt": "R", "right": "R",
}
# longest first so that "left" is tried before "l" when a side is glued on
_GLUED_SIDES: tuple[str, ...] = tuple(sorted(_SIDE_TOKENS, key=len, reverse=True))

_TARGET_RE = re.compile(r"^[\W_]*(ptv|ctv|gtv|itv)", re.IGNORECASE)
_TARGET_TOKEN_RE = re.compile(r"^(ptv|ctv|gtv|itv)")
# tokens that mark a derived (planning helper) structure anywhere in the name
_DERIVED_TOKENS = frozenset({
    "prv", "opt", "optim", "avoid", "avd", "ring", "shell", "crop", "cropped",
    "exp", "expand", "expanded", "minus", "help", "helper", "tmp", "dummy",
})
# tokens that mark a derived structure only as the first token
_DERIVED_PREFIXES = frozenset({"z", "zz", "zzz", "x", "xx"})
_MARGIN_UNITS = frozenset({"mm", "cm"})

_ORGAN_KINDS = ("oar", "external", "union", "out_of_scope")
#: kinds whose matches name a known structure but map onto no canonical OAR
_KNOWN_UNMAPPED = ("union", "out_of_scope")
#: tokens that say "both sides" around a lateral organ ("Both Parotids", "Parotid bilat")
_BOTH_TOKENS = frozenset({"both", "bilat", "bilateral", "bil", "lr", "rl"})
_BASE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_TOP_KEYS = ("organs", "exact", "ignore")
_ORGAN_KEYS = ("lateral", "synonyms", "kind")


# --------------------------------------------------------------------------
# tokenising
# --------------------------------------------------------------------------

def tokenize(name: str) -> list[str]:
    """Split an ROI name into lower-case tokens.

    camelCase boundaries (``BrainStem``, ``LeftParotid``, ``SMGLt``),
    letter/digit boundaries (``PTV70``) and every character that is not a
    letter or digit (space, ``_``, ``-``, ``.``, ``+``, brackets...) separate
    tokens.

    Parameters
    ----------
    name : str
        ROI name as written.

    Returns
    -------
    list of str
        Lower-case tokens, possibly empty.

    Examples
    --------
    >>> tokenize("LeftParotid")
    ['left', 'parotid']
    >>> tokenize("parotid (L)")
    ['parotid', 'l']
    >>> tokenize("OpticNerve_Lt")
    ['optic', 'nerve', 'lt']
    """
    s = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)  # camelCase
    # ACRONYMWord, but not an acronym's plural: "PCMs" stays one token, not "PC Ms"
    s = re.sub(r"(?<=[A-Z])(?=[A-Z](?!s(?![a-z]))[a-z])", " ", s)
    s = re.sub(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])", " ", s)  # letters|digits
    return [t for t in re.split(r"[\W_]+", s.casefold()) if t]


def name_key(name: str) -> str:
    """Case-free key of a name: its tokens joined, one-letter tokens kept apart.

    Separators between words do not matter ("Brain Stem", "brain_stem" and
    "BrainStem" all give ``"brainstem"``), but a one-letter token stays
    separated by ``|``: "Constrictor S" gives ``"constrictor|s"``, which
    the plural "Constrictors" (``"constrictors"``) can never equal. Joining
    those without a mark made a union of organs read as one of its parts.

    Parameters
    ----------
    name : str
        Any name or synonym.

    Returns
    -------
    str
    """
    return _join(tokenize(name))


def _join(tokens: list[str]) -> str:
    """The key of a token list (see :func:`name_key`)."""
    out = ""
    for i, t in enumerate(tokens):
        if i and (len(t) == 1 or len(tokens[i - 1]) == 1):
            out += "|"
        out += t
    return out


def _split_sides(tokens: list[str]) -> tuple[list[str], list[str]]:
    """Take side tokens off both ends; return (remaining tokens, sides found)."""
    toks = list(tokens)
    sides: list[str] = []
    while toks and toks[0] in _SIDE_TOKENS:
        sides.append(_SIDE_TOKENS[toks.pop(0)])
    while toks and toks[-1] in _SIDE_TOKENS:
        sides.append(_SIDE_TOKENS[toks.pop()])
    return toks, sides


def _exact_key(name: str) -> str:
    return " ".join(name.split()).casefold()


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class NameMatch:
    """Outcome of matching one ROI name.

    Attributes
    ----------
    original : str
        The ROI name as given.
    canonical : str or None
        Canonical name, or None when the name is not mapped (every kind but
        ``oar`` and ``external``).
    kind : {'oar', 'external', 'union', 'out_of_scope', 'target', 'derived', 'unmatched', 'ignored'}
        What the name was recognised as. ``union``: several OARs drawn as
        one structure ("Parotids", "Constrictors"), never matched to one of
        its parts; ``out_of_scope``: a known organ outside head and neck
        ("Bladder", "Kidney_L").
    reason : str
        Why, in words (which rule matched, or why nothing did).
    known : str or None
        For ``union`` and ``out_of_scope``: the known (TG-263 style) name
        the ROI was recognised as, e.g. ``Musc_Constrict`` or ``Kidney_L``.
    """

    original: str
    canonical: str | None
    kind: MatchKind
    reason: str
    known: str | None = None

    @property
    def matched(self) -> bool:
        """True when the name maps onto a canonical name."""
        return self.canonical is not None


@dataclass
class NameMatchReport:
    """Matches of all ROI names of one structure set.

    Attributes
    ----------
    matches : list of NameMatch
        One per input name, in input order.
    mapping : dict of str to str
        Original -> canonical for matched names whose canonical name no
        other name of the set also claims.
    duplicates : dict of str to list of str
        Canonical -> originals for canonical names claimed by two or more
        names of the set; these canonical names are *not* in ``mapping``.
    source : str
        Where the names came from (e.g. the RTSTRUCT path), for messages.
    """

    matches: list[NameMatch]
    mapping: dict[str, str] = field(default_factory=dict)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    @property
    def unmatched(self) -> list[NameMatch]:
        """Names that map onto nothing: kinds unmatched, derived, target, ignored."""
        return [m for m in self.matches if m.canonical is None]

    @property
    def unexpected(self) -> list[NameMatch]:
        """Unmatched names worth a warning (kind ``unmatched`` only).

        Targets, derived structures (PRVs, optimisation helpers) and ignored
        names are normal in a clinical structure set and can be skipped
        quietly.
        """
        return [m for m in self.matches if m.kind == "unmatched"]

    def status(self, match: NameMatch) -> str:
        """Status of one match in this set: matched, duplicate, or its kind."""
        if match.canonical is None:
            return match.kind
        return "duplicate" if match.canonical in self.duplicates else "matched"

    def to_frame(self):
        """One row per input name.

        Returns
        -------
        pandas.DataFrame
            Columns ``original``, ``canonical``, ``kind``, ``status``
            (matched, unmatched, duplicate, target, ignored, derived) and
            ``reason``; ``canonical`` is missing (NA) for names not mapped and
            shows the contested name for duplicates.
        """
        rows = []
        for m in self.matches:
            status = self.status(m)
            reason = m.reason
            if status == "duplicate":
                claimants = self.duplicates[m.canonical]
                reason = (f"{m.canonical} is claimed by {len(claimants)} names "
                          f"({', '.join(repr(o) for o in claimants)}); none is used")
            rows.append({"original": m.original, "canonical": m.canonical, "kind": m.kind,
                         "status": status, "reason": reason})
        return pd.DataFrame(rows, columns=["original", "canonical", "kind", "status", "reason"])

    def raise_for_duplicates(self) -> None:
        """Raise :class:`~soars_dose.errors.NameClashError` if any canonical name is contested.

        Raises
        ------
        NameClashError
            Naming the source, each contested canonical name and its claimants.
        """
        if not self.duplicates:
            return
        where = f"{self.source}: " if self.source else ""
        clashes = "; ".join(f"{c} <- {', '.join(repr(o) for o in origs)}"
                            for c, origs in self.duplicates.items())
        raise NameClashError(
            f"{where}several ROI names map onto one OAR ({clashes}). Rename or delete the "
            "extra ROI, or list the one to skip under 'ignore:' in a user alias file.")


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

@dataclass
class OrganEntry:
    """One organ of an :class:`AliasTable`.

    Attributes
    ----------
    base : str
        Canonical base name (``Parotid``, ``Brainstem``).
    lateral : bool or 'optional'
        Whether the canonical names carry ``_L``/``_R`` (see module docs).
    kind : {'oar', 'external'}
        Kind reported for matches of this organ.
    synonyms : list of str
        Base synonyms as written in the alias file (without the base itself).
    """

    base: str
    lateral: bool | Literal["optional"]
    kind: str = "oar"
    synonyms: list[str] = field(default_factory=list)

    def canonical_names(self) -> list[str]:
        """Canonical names this organ produces."""
        if self.lateral is True:
            return [f"{self.base}_L", f"{self.base}_R"]
        if self.lateral is False:
            return [self.base]
        return [self.base, f"{self.base}_L", f"{self.base}_R"]

    def keys(self) -> list[str]:
        """Lookup keys: the base's and every synonym's."""
        out: list[str] = []
        for s in [self.base, *self.synonyms]:
            k = name_key(s)
            if k and k not in out:
                out.append(k)
        return out


class AliasTable:
    """Synonym table that maps ROI names onto canonical OAR names.

    Build it with :meth:`load` (packaged table, optionally extended by a user
    file) or :meth:`default` (packaged table, cached).

    Parameters
    ----------
    organs : dict of str to OrganEntry
        Canonical base -> entry.
    exact : dict of str to str, optional
        Literal ROI name -> canonical name.
    ignore : iterable of str, optional
        Names skipped quietly.
    source : str, optional
        Where the table came from, for messages.

    Raises
    ------
    InputError
        If two organs claim one key or a canonical name is produced twice,
        or an ``exact`` target is not a canonical name of the table.
    """

    def __init__(self, organs: dict[str, OrganEntry], exact: dict[str, str] | None = None,
                 ignore: Iterable[str] = (), source: str = "") -> None:
        self.organs = dict(organs)
        self.source = source
        self._key_to_base: dict[str, str] = {}
        where = f"{source}: " if source else ""
        for base, entry in self.organs.items():
            for k in entry.keys():
                other = self._key_to_base.get(k)
                if other is not None and other != base:
                    raise InputError(
                        f"{where}organs {other} and {base} both claim the name key {k!r}; "
                        "keep it under one organ only.")
                self._key_to_base[k] = base
        self._canonical: dict[str, OrganEntry] = {}
        for entry in self.organs.values():
            for c in entry.canonical_names():
                if c in self._canonical:
                    raise InputError(
                        f"{where}canonical name {c} is produced by both organ "
                        f"{self._canonical[c].base} and organ {entry.base}; rename one.")
                self._canonical[c] = entry
        self.exact: dict[str, str] = {}
        for name, canonical in (exact or {}).items():
            if canonical not in self._canonical:
                raise InputError(
                    f"{where}exact override {name!r} -> {canonical!r}: {canonical!r} is not a "
                    "canonical name of the table; use one of the names it produces "
                    "(e.g. Parotid_L) or add the organ under 'organs:'.")
            self.exact[_exact_key(name)] = canonical
        self.ignore: frozenset[str] = frozenset(k for k in (name_key(n) for n in ignore) if k)
        self._cache: dict[str, NameMatch] = {}

    # ---- construction -----------------------------------------------------

    @classmethod
    def load(cls, user_file: str | Path | None = None) -> "AliasTable":
        """Load the packaged table, extended by a user alias file.

        Parameters
        ----------
        user_file : str or Path, optional
            YAML file in the format of the module documentation.

        Returns
        -------
        AliasTable

        Raises
        ------
        InputError
            If the user file is missing, unreadable, not valid YAML or not of
            the documented format; the message names the file, the problem
            and, where known, the line.
        """
        text, packaged_name = _packaged_text()
        packaged, exact, ignore = _parse_alias_text(text, packaged_name)
        organs: dict[str, OrganEntry] = {}
        _merge(organs, packaged, packaged_name)
        sources = [packaged_name]
        if user_file is not None:
            text, where = user_text(user_file, "alias file")
            u_organs, u_exact, u_ignore = _parse_alias_text(text, where)
            _merge(organs, u_organs, where)
            exact.update(u_exact)
            ignore.extend(u_ignore)
            sources.append(where)
        return cls(organs, exact, ignore, source=" + ".join(sources))

    @classmethod
    def default(cls) -> "AliasTable":
        """The packaged table (loaded once per process)."""
        return _default_table()

    # ---- queries ------------------------------------------------------------

    def canonical_names(self) -> list[str]:
        """Every canonical name the table can produce, in table order."""
        return list(self._canonical)

    def kind_of(self, canonical: str) -> str:
        """Kind (``oar`` or ``external``) of a canonical name."""
        return self._canonical[canonical].kind

    def match(self, name: str) -> NameMatch:
        """Match one ROI name (rules in the module documentation).

        Parameters
        ----------
        name : str
            ROI name as written in the structure set.

        Returns
        -------
        NameMatch

        Raises
        ------
        InputError
            If ``name`` is not a string.

        Examples
        --------
        >>> t = AliasTable.default()
        >>> t.match("Parotid Lt").canonical
        'Parotid_L'
        >>> t.match("Parotid_L_PRV").kind
        'derived'
        """
        if not isinstance(name, str):
            raise InputError(f"ROI name must be a string, got {type(name).__name__}: {name!r}")
        hit = self._cache.get(name)
        if hit is None:
            hit = self._match(name)
            self._cache[name] = hit
        return hit

    def _result(self, name: str, canonical: str, reason: str) -> NameMatch:
        kind = self._canonical[canonical].kind
        if kind == "union":
            return NameMatch(name, None, "union", f"{reason}: a union of several OARs drawn as "
                             "one structure; never matched to one of its parts", known=canonical)
        if kind == "out_of_scope":
            return NameMatch(name, None, "out_of_scope", f"{reason}: a known organ outside "
                             "head and neck; not an OAR of this audit", known=canonical)
        return NameMatch(name, canonical, kind, reason)  # type: ignore[arg-type]

    def _match(self, name: str) -> NameMatch:
        if not name.strip():
            return NameMatch(name, None, "unmatched", "empty name")
        exact = self.exact.get(_exact_key(name))
        if exact is not None:
            return self._result(name, exact, "exact override")
        tokens = tokenize(name)
        key = _join(tokens)
        if key in self.ignore or (tokens and tokens[0] == "couch"):
            return NameMatch(name, None, "ignored", "listed under 'ignore' in the alias table"
                             if key in self.ignore else "couch structure")
        if "+" in name:
            return NameMatch(name, None, "derived",
                             "derived structure ('+' marks an expansion or union)")
        if _TARGET_RE.match(name):
            return NameMatch(name, None, "target", "target volume (PTV/CTV/GTV/ITV); not an OAR")
        if not tokens:
            return NameMatch(name, None, "unmatched", "no letters or digits in the name")

        found = self._lookup(name, tokens)
        if found is not None and found.kind != "unmatched":
            return found
        both = self._union_of_sides(name, tokens)
        if both is not None:
            return both
        if found is not None:
            return found

        derived = _derived_reason(tokens)
        if derived is not None:
            return NameMatch(name, None, "derived", f"derived structure ({derived})")
        return NameMatch(name, None, "unmatched",
                         f"not in the alias table (key {key!r}); add it as a synonym under "
                         "'organs:' or under 'exact:' in a user alias file")

    def _lookup(self, name: str, tokens: list[str]) -> NameMatch | None:
        """Organ lookup with side handling; None when no organ is found."""
        rest, sides = _split_sides(tokens)
        base_key = _join(rest)
        if not rest:
            return NameMatch(name, None, "unmatched", "only a side, no organ name")
        base = self._key_to_base.get(base_key)
        if base is None and not sides:
            return self._lookup_glued(name, rest)
        if base is None:
            return None
        entry = self.organs[base]
        if len(set(sides)) > 1:
            return NameMatch(name, None, "unmatched",
                             f"conflicting sides ({'/'.join(sorted(set(sides)))}) for {base}")
        side = sides[0] if sides else None
        how = "canonical name" if base_key == name_key(base) else f"synonym {base_key!r}"
        if side is None:
            if entry.lateral is True:
                return NameMatch(name, None, "unmatched",
                                 f"{base} is a lateral organ but the name gives no side "
                                 f"(L/R); it would be {base}_L or {base}_R")
            return self._result(name, base, how)
        if entry.lateral is False:
            return NameMatch(name, None, "unmatched",
                             f"{base} is a midline organ but the name carries side {side}")
        return self._result(name, f"{base}_{side}", f"{how} + side {side}")

    def _union_of_sides(self, name: str, tokens: list[str]) -> NameMatch | None:
        """Both sides of a lateral organ as one structure ("Parotids", "Both Eyes", "Lenses")."""
        toks = [t for t in tokens if t not in _BOTH_TOKENS]
        said_both = len(toks) < len(tokens)
        if not toks or any(t in _SIDE_TOKENS for t in (toks[0], toks[-1])):
            return None
        key = _join(toks)
        candidates = [key] if said_both else []
        # plurals: "parotids", "lenses", "optic nerves" (the key's last letters)
        candidates += [key[:-1]] if key.endswith("s") else []
        candidates += [key[:-2]] if key.endswith("es") else []
        for k in candidates:
            base = self._key_to_base.get(k)
            if base is not None and self.organs[base].lateral is not False:
                plural = base + ("es" if base.endswith("s") else "s")  # TG-263: Parotids, Lenses
                return NameMatch(name, None, "union",
                                 f"{base}_L and {base}_R drawn as one structure; never matched "
                                 "to one side", known=plural)
        return None

    def _lookup_glued(self, name: str, tokens: list[str]) -> NameMatch | None:
        """Try a side glued onto the first or last token ("parotidl", "LEFTPAROTID")."""
        readings: dict[str, str] = {}
        first, last = tokens[0], tokens[-1]
        for s in _GLUED_SIDES:
            if len(first) > len(s) and first.startswith(s):
                k = _join([first[len(s):], *tokens[1:]])
                base = self._key_to_base.get(k)
                if base is not None and self.organs[base].lateral is not False:
                    readings.setdefault(f"{base}_{_SIDE_TOKENS[s]}", k)
            if len(last) > len(s) and last.endswith(s):
                k = _join([*tokens[:-1], last[: -len(s)]])
                base = self._key_to_base.get(k)
                if base is not None and self.organs[base].lateral is not False:
                    readings.setdefault(f"{base}_{_SIDE_TOKENS[s]}", k)
        if len(readings) == 1:
            canonical, k = next(iter(readings.items()))
            return self._result(name, canonical, f"synonym {k!r} + side {canonical[-1]} (glued)")
        if len(readings) > 1:
            return NameMatch(name, None, "unmatched",
                             f"ambiguous: could be {' or '.join(sorted(readings))}")
        return None


def _derived_reason(tokens: list[str]) -> str | None:
    """Why the tokens look like a derived structure, or None."""
    if tokens[0] in _DERIVED_PREFIXES:
        return f"prefix {tokens[0]!r}"
    for i, t in enumerate(tokens):
        if t in _DERIVED_TOKENS:
            return f"marker {t!r}"
        if i > 0 and _TARGET_TOKEN_RE.match(t):
            return f"target token {t!r} after the organ"
        if t in _MARGIN_UNITS and i > 0 and tokens[i - 1].isdigit():
            return f"margin {tokens[i - 1]}{t}"
    return None


@functools.lru_cache(maxsize=1)
def _default_table() -> AliasTable:
    return AliasTable.load()


# --------------------------------------------------------------------------
# alias files
# --------------------------------------------------------------------------

def _packaged_text() -> tuple[str, str]:
    """Text and display name of the packaged aliases.yaml."""
    return packaged_text("aliases.yaml")


def _parse_alias_text(text: str, source: str
                      ) -> tuple[dict[str, OrganEntry], dict[str, str], list[str]]:
    """Parse and validate one alias file; organs of a user file may omit ``lateral``
    (``OrganEntry.lateral`` is then None until merged)."""
    r = YamlReader(text, source)
    organs: dict[str, OrganEntry] = {}
    exact: dict[str, str] = {}
    ignore: list[str] = []
    try:
        if r.root is None or r.is_null(r.root):
            return organs, exact, ignore
        claimed: dict[str, str] = {}
        for top, knode, vnode in r.mapping(r.root, "the alias file"):
            if top not in _TOP_KEYS:
                raise r.fail(knode, f"unknown key {top!r}; allowed keys: {', '.join(_TOP_KEYS)}")
            if r.is_null(vnode):
                continue
            if top == "organs":
                for base, bnode, enode in r.mapping(vnode, "'organs'"):
                    organs[base] = _parse_organ(r, base, bnode, enode)
                    for k in organs[base].keys():
                        if k in claimed and claimed[k] != base:
                            raise r.fail(bnode, f"organs {claimed[k]} and {base} both claim "
                                                f"the name key {k!r}; keep it under one only")
                        claimed[k] = base
            elif top == "exact":
                for name, _, cnode in r.mapping(vnode, "'exact'"):
                    exact[name] = r.string(cnode, f"exact override for {name!r}")
            else:
                for inode in r.sequence(vnode, "'ignore'"):
                    ignore.append(r.string(inode, "an 'ignore' entry"))
    finally:
        r.loader.dispose()
    return organs, exact, ignore


def _parse_organ(r: YamlReader, base: str, bnode: yaml.Node, enode: yaml.Node) -> OrganEntry:
    if not _BASE_RE.match(base):
        raise r.fail(bnode, f"organ name {base!r} may hold only letters, digits and '_' "
                            "and must start with a letter (TG-263 style)")
    entry = OrganEntry(base=base, lateral=None, kind=None, synonyms=[])  # type: ignore[arg-type]
    if r.is_null(enode):
        return entry
    for key, knode, vnode in r.mapping(enode, f"organ {base}"):
        if key == "lateral":
            value = r.scalar(vnode, f"'lateral' of {base}")
            if not (value is True or value is False or value == "optional"):
                raise r.fail(vnode, f"'lateral' of {base} must be true, false or optional, "
                                    f"got {value!r}")
            entry.lateral = value
        elif key == "kind":
            value = r.string(vnode, f"'kind' of {base}")
            if value not in _ORGAN_KINDS:
                raise r.fail(vnode, f"'kind' of {base} must be one of "
                                    f"{', '.join(_ORGAN_KINDS)}, got {value!r}")
            entry.kind = value
        elif key == "synonyms":
            if r.is_null(vnode):
                continue
            for snode in r.sequence(vnode, f"'synonyms' of {base}"):
                syn = r.string(snode, f"a synonym of {base}")
                if not name_key(syn):
                    raise r.fail(snode, f"synonym {syn!r} of {base} must be a text with "
                                        "letters or digits")
                _, sides = _split_sides(tokenize(syn))
                if sides:
                    raise r.fail(snode, f"synonym {syn!r} of {base} carries a side; list base "
                                        "names only (sides are recognised automatically) or "
                                        "put the full name under 'exact:'")
                entry.synonyms.append(syn)
        else:
            raise r.fail(knode, f"unknown key {key!r} in organ {base}; allowed keys: "
                                f"{', '.join(_ORGAN_KEYS)}")
    if entry.lateral in (True, "optional") and re.search(r"_[LR]$", base):
        raise r.fail(bnode, f"lateral organ {base} must be given without its _L/_R suffix")
    return entry


def _merge(organs: dict[str, OrganEntry], extra: dict[str, OrganEntry], source: str) -> None:
    """Merge user organs into ``organs`` in place (user wins)."""
    user_keys: dict[str, str] = {}
    for base, entry in extra.items():
        for k in entry.keys():
            user_keys[k] = base
    for base, entry in organs.items():
        if base in extra:
            continue
        if name_key(base) in user_keys:
            raise InputError(
                f"{source}: organ {user_keys[name_key(base)]} claims {base!r}, which is the "
                f"canonical name of organ {base}; choose another synonym.")
        entry.synonyms = [s for s in entry.synonyms if name_key(s) not in user_keys]
    for base, new in extra.items():
        old = organs.get(base)
        if old is None:
            if new.lateral is None:
                raise InputError(f"{source}: new organ {base} needs 'lateral: true', "
                                 "'false' or 'optional'.")
            organs[base] = OrganEntry(base, new.lateral, new.kind or "oar", list(new.synonyms))
        else:
            if new.lateral is not None:
                old.lateral = new.lateral
            if new.kind is not None:
                old.kind = new.kind
            elif new.lateral is not None and old.kind in _KNOWN_UNMAPPED:
                # a user who defines a known union or out-of-scope organ wants it audited
                old.kind = "oar"
            old.synonyms.extend(s for s in new.synonyms if s not in old.synonyms)
    for entry in organs.values():
        if entry.kind is None:
            entry.kind = "oar"
        if entry.lateral is None:
            raise InputError(f"{source}: organ {entry.base} needs 'lateral'.")


# --------------------------------------------------------------------------
# many names
# --------------------------------------------------------------------------

def match_names(names: list[str], table: AliasTable | None = None,
                source: str = "") -> NameMatchReport:
    """Match all ROI names of one structure set.

    Parameters
    ----------
    names : list of str
        ROI names as written, e.g. every ROIName of one RTSTRUCT.
    table : AliasTable, optional
        Defaults to the packaged table (:meth:`AliasTable.default`).
    source : str, optional
        Where the names came from (e.g. the RTSTRUCT path), used in
        messages.

    Returns
    -------
    NameMatchReport
        ``mapping`` holds original -> canonical for every matched name whose
        canonical name is claimed once; canonical names claimed by several
        names are listed in ``duplicates`` and left out of ``mapping`` (no
        name is picked silently).

    Raises
    ------
    InputError
        If ``names`` is a single string or holds a non-string.

    Examples
    --------
    >>> r = match_names(["L Parotid", "Parotid Rt", "PTV70", "Cord"])
    >>> r.mapping
    {'L Parotid': 'Parotid_L', 'Parotid Rt': 'Parotid_R', 'Cord': 'SpinalCord'}
    """
    if isinstance(names, str):
        raise InputError(f"match_names expects a list of ROI names, got the string {names!r}")
    table = AliasTable.default() if table is None else table
    matches = [table.match(n) for n in names]
    claims: dict[str, list[str]] = {}
    for m in matches:
        if m.canonical is not None:
            claims.setdefault(m.canonical, []).append(m.original)
    duplicates = {c: origs for c, origs in claims.items() if len(origs) > 1}
    mapping = {m.original: m.canonical for m in matches
               if m.canonical is not None and m.canonical not in duplicates}
    return NameMatchReport(matches=matches, mapping=mapping, duplicates=duplicates,
                           source=source)


# --------------------------------------------------------------------------
# how the ROIs of one file match (``soars-dose names``)
# --------------------------------------------------------------------------

#: Columns of :func:`describe_rois`.
DESCRIBE_COLUMNS = ["roi_number", "roi_name", "canonical", "status", "rule", "suggestions"]


def suggest(name: str, table: AliasTable | None = None, n: int = 3) -> list[str]:
    """Canonical OAR names close to an unmatched ROI name (suggestions only, never applied).

    Compares name keys (:func:`name_key`) with :func:`difflib.get_close_matches`.

    Parameters
    ----------
    name : str
        The ROI name as written.
    table : AliasTable, optional
        Defaults to the packaged table.
    n : int
        At most this many suggestions, closest first.

    Returns
    -------
    list of str
        Canonical names of kind ``oar``; empty when nothing is close.
    """
    table = AliasTable.default() if table is None else table
    rest, sides = _split_sides(tokenize(name))
    keys: dict[str, OrganEntry] = {}
    for entry in table.organs.values():
        if entry.kind == "oar":
            for k in entry.keys():  # synonyms too: "Mandibel" is close to "Mandible"
                keys.setdefault(k, entry)
    out: list[str] = []
    for hit in difflib.get_close_matches(_join(rest), list(keys), n=n, cutoff=0.75):
        entry = keys[hit]
        side = sides[0] if len(set(sides)) == 1 else None
        wanted = [f"{entry.base}_{side}"] if side and entry.lateral is not False else (
            [entry.base] if entry.lateral is not True else entry.canonical_names())
        out += [c for c in wanted if c not in out]
    return out[:n]


def describe_rois(rois: "list[tuple[int | None, str]]", table: AliasTable | None = None,
                  source: str = ""):
    """How every ROI of one structure set matches, one row each.

    Parameters
    ----------
    rois : list of (ROI number, ROI name)
        In file order.
    table : AliasTable, optional
        Defaults to the packaged table.
    source : str, optional
        Where the ROIs came from, for messages.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DESCRIBE_COLUMNS`. ``status`` is ``matched`` (one of
        the 42 SOARS OARs), ``outside_42`` (a known OAR name that is not one
        of the 42), ``external``, ``union``, ``out_of_scope``, ``target``,
        ``derived``, ``ignored``, ``duplicate`` or ``unmatched``;
        ``canonical`` holds the canonical name, or for unions and
        out-of-scope organs the known name; ``suggestions`` lists close
        canonical names (``;``-separated) for unmatched names only.
    """
    from .oars import names as catalogue_names  # no torch

    table = AliasTable.default() if table is None else table
    report = match_names([name for _, name in rois], table, source=source)
    soars42 = set(catalogue_names())
    rows = []
    for (number, name), m in zip(rois, report.matches):
        status = report.status(m)
        if status == "matched" and m.kind == "oar" and m.canonical not in soars42:
            status = "outside_42"
        elif status == "matched" and m.kind == "external":
            status = "external"
        rule = m.reason
        if status == "duplicate":
            rule = (f"{m.canonical} is claimed by {len(report.duplicates[m.canonical])} ROIs of "
                    "the file; none is used")
        rows.append({"roi_number": number, "roi_name": name,
                     "canonical": m.canonical or m.known, "status": status, "rule": rule,
                     "suggestions": "; ".join(suggest(name, table)) if status == "unmatched"
                     else ""})
    return pd.DataFrame(rows, columns=DESCRIBE_COLUMNS)


@dataclass
class MatchedSets:
    """ROIs of every set keyed by canonical OAR name.

    Attributes
    ----------
    rois : dict set -> dict OAR -> Structure or RoiOutcome
        A Structure when the OAR is usable; a
        :class:`~soars_dose.case.RoiOutcome` for ``duplicate`` or ``empty``
        ROIs.
    order : list of str
        OARs of the reference first, then those only other sets have.
    names : DataFrame
        How every ROI name was matched (one row per set x ROI).
    messages : list of str
    """

    rois: dict[str, dict[str, Structure | RoiOutcome]]
    order: list[str]
    names: pd.DataFrame
    messages: list[str]


def match_sets(case: Case, aliases: AliasTable | None = None) -> MatchedSets:
    """Match the ROI names of every set to canonical OAR names (never guessing).

    Only organs are kept; External (BODY), targets, derived and unmatched
    names are listed in :attr:`MatchedSets.names`. Two ROIs of one set
    that map to one OAR (or one ROIName used twice) make that OAR a
    ``duplicate`` for the set.
    """
    if REFERENCE not in case.sets:
        raise SoarsDoseError(f"a comparison needs a set named {REFERENCE!r}; got {list(case.sets)}")
    table = aliases or AliasTable.load()
    messages: list[str] = []
    matched: dict[str, dict[str, Structure | RoiOutcome]] = {}
    name_frames = []
    for set_name, sset in case.sets.items():
        rep = match_names(sset.names(), table, source=str(sset.source or set_name))
        nf = rep.to_frame()
        nf.insert(0, "set", set_name)
        name_frames.append(nf)
        by_name: dict[str, list] = {}
        for st in sset:
            by_name.setdefault(st.name, []).append(st)
        m: dict[str, Structure | RoiOutcome] = {}
        kinds = {mt.original: mt.kind for mt in rep.matches}
        for original, canonical in rep.mapping.items():
            if kinds.get(original) != "oar":
                continue
            sts = by_name.get(original, [])
            if len(sts) != 1:  # the same ROIName twice: a clash, never pick one
                m[canonical] = RoiOutcome(
                    DUPLICATE, original, f"{sset.source}: ROI name {original!r} is used "
                    f"{len(sts)} times")
                messages.append(m[canonical].message)
            elif sts[0].is_empty:
                m[canonical] = RoiOutcome(EMPTY, original,
                                          f"{sset.source}: ROI {original!r} has no contour")
                messages.append(m[canonical].message)
            else:
                m[canonical] = sts[0]
        for canonical, originals in rep.duplicates.items():
            if table.kind_of(canonical) != "oar":
                continue
            m[canonical] = RoiOutcome(
                DUPLICATE, " | ".join(originals),
                f"{sset.source}: {len(originals)} ROIs ({', '.join(map(repr, originals))}) "
                f"all match {canonical}; rename one or map it in an alias file")
            messages.append(m[canonical].message)
        for um in rep.unmatched:
            if um.kind == "unmatched":
                messages.append(f"{sset.source}: ROI {um.original!r} not matched to an OAR "
                                f"({um.reason}); add it to an alias file to include it")
        matched[set_name] = m
    ref_oars = list(matched[REFERENCE])
    order = ref_oars + sorted({o for m in matched.values() for o in m} - set(ref_oars))
    return MatchedSets(matched, order, pd.concat(name_frames, ignore_index=True), messages)
