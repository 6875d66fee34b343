"""Singular forms as the Pattern library's ``singularize`` (clips/pattern, ``pattern.en``) gives them.

The standard CHAIR script singularises every caption token with Pattern; Pattern no longer installs
from the package registry (the name now belongs to another project), so prefopt carries its own
implementation of the same behaviour.  The word lists and suffix rules below are the facts of
Pattern's English inflection module (BSD-3-Clause, Copyright (c) 2011-2013 University of Antwerp,
Belgium), rewritten as data; the procedure is prefopt's.  Its quirks matter for CHAIR and are kept:
``bus`` -> ``bu`` (so a lone "bus" is not a COCO object to the official script, "buses" is),
``glass`` -> ``glas``, ``ties`` -> ``ty``, ``doggies`` stays ``doggies``.
Checked against Pattern's own function on every token of the CHAIR test captions and COCO's
vocabulary (tests/test_eval_chair_official.py).
"""

from __future__ import annotations

import re

#: words whose singular is themselves; a token that is the *ending* of one of them is also kept as it is
_UNCHANGED = set(
    """bison debris headquarters pincers trout bream diabetes herpes pliers tuna breeches djinn high-jinks
    proceedings whiting britches eland homework rabies wildebeest carp elk innings salmon chassis flounder
    jackanapes scissors christmas gallows mackerel series clippers georgia measles shears cod graffiti mews
    species contretemps mumps swine corps news swiss
    advice equipment happiness luggage software bread fruit information mathematics progress understanding
    butter furniture ketchup mayonnaise research water cheese garbage knowledge meat rice electricity gravel
    love mustard sand""".split()
)
#: nouns in -ie whose plural just adds -s (``^`` marks one that never matches: Pattern tests the raw text)
_IE_NOUNS = """alergie cutie hoagie newbie softie veggie auntie doggie hottie nightie sortie weenie beanie eyrie
    indie oldie stoolie yuppie birdie freebie junkie ^pie sweetie zombie bogie goonie laddie pixie techie
    bombie groupie laramie quickie ^tie collie hankie lingerie reverie toughie cookie hippie meanie rookie
    valkyrie""".split()
#: irregular plural endings, in the order Pattern tries them
_IRREGULAR = [
    tuple(pair.split(":"))
    for pair in """atlantes:atlas atlases:atlas axes:axe beeves:beef brethren:brother children:child
    corpora:corpus corpuses:corpus ephemerides:ephemeris feet:foot ganglia:ganglion geese:goose genera:genus
    genii:genie graffiti:graffito helves:helve kine:cow leaves:leaf loaves:loaf men:man mongooses:mongoose
    monies:money moves:move mythoi:mythos numena:numen occipita:occiput octopodes:octopus opera:opus
    opuses:opus our:my oxen:ox penes:penis penises:penis people:person sexes:sex soliloquies:soliloquy
    teeth:tooth testes:testis trilbys:trilby turves:turf zoa:zoon""".split()
]
#: second parts of compounds whose head takes the plural (``mothers-in-law``)
_PREPOSITIONS = set(
    """about before during of till above behind except off to across below for on under after beneath from
    onto until among beside in out unto around besides into over upon at between near since with athwart
    betwixt beyond but by""".split()
)
#: ordered suffix rules (regular expression, replacement); the first that matches is applied
_RULES = [
    (re.compile(pattern, re.IGNORECASE), repl)
    for pattern, repl in [
        (r"(.)ae$", r"\1a"), (r"(.)itis$", r"\1itis"), (r"(.)eaux$", r"\1eau"), (r"(quiz)zes$", r"\1"),
        (r"(matr)ices$", r"\1ix"), (r"(ap|vert|ind)ices$", r"\1ex"), (r"^(ox)en", r"\1"),
        (r"(alias|status)es$", r"\1"), (r"([octop|vir])i$", r"\1us"), (r"(cris|ax|test)es$", r"\1is"),
        (r"(shoe)s$", r"\1"), (r"(o)es$", r"\1"), (r"(bus)es$", r"\1"), (r"([m|l])ice$", r"\1ouse"),
        (r"(x|ch|ss|sh)es$", r"\1"), (r"(m)ovies$", r"\1ovie"), (r"(.)ombies$", r"\1ombie"),
        (r"(s)eries$", r"\1eries"), (r"([^aeiouy]|qu)ies$", r"\1y"),
        (r"([aeo]l)ves$", r"\1f"), (r"([^d]ea)ves$", r"\1f"), (r"arves$", "arf"), (r"erves$", "erve"),
        (r"([nlw]i)ves$", r"\1fe"), (r"([lr])ves$", r"\1f"), (r"([aeo])ves$", r"\1ve"), (r"(sive)s$", r"\1"),
        (r"(tive)s$", r"\1"), (r"(hive)s$", r"\1"), (r"([^f])ves$", r"\1fe"),
        (r"(^analy)ses$", r"\1sis"),
        (r"((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", r"\1\2sis"),
        (r"(.)opses$", r"\1opsis"), (r"(.)yses$", r"\1ysis"), (r"(h|d|r|o|n|b|cl|p)oses$", r"\1ose"),
        (r"(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", r"\1ose"), (r"(.)oses$", r"\1osis"),
        (r"([ti])a$", r"\1um"), (r"(n)ews$", r"\1ews"), (r"s$", ""),
    ]
]
# the case-sensitive rules of Pattern (the -ves group without (?i)); captions are lower-cased, so it is moot
_CASE_SENSITIVE = {r"([aeo]l)ves$", r"([^d]ea)ves$", r"arves$", r"erves$", r"([nlw]i)ves$", r"([aeo])ves$"}
_RULES = [(re.compile(r.pattern) if r.pattern in _CASE_SENSITIVE else r, s) for r, s in _RULES]


def singularize(word: str) -> str:
    """The singular of ``word`` as Pattern computes it (quirks included)."""
    if "-" in word:
        parts = word.split("-")
        if len(parts) > 1 and parts[1] in _PREPOSITIONS:
            return singularize(parts[0]) + "-" + "-".join(parts[1:])
    if word.endswith("'"):
        return singularize(word[:-1]) + "'s"
    lower = word.lower()
    if any(w.endswith(lower) for w in _UNCHANGED):
        return word
    if any(lower.endswith(ie + "s") for ie in _IE_NOUNS):
        return lower
    for plural, single in _IRREGULAR:
        if lower.endswith(plural):
            return re.sub("(?i)" + plural + "$", single, word)
    for rule, repl in _RULES:
        if rule.search(word):
            return rule.sub(repl, word)
    return word
