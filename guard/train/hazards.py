"""A keyword rule that gives an S1-S14 hazard code to a harmful request that its source left uncategorised.

Used only for sources that label every row harmful but give no (or no usable) category: AdvBench, MaliciousInstruct,
TDC 2023, HarmfulQ, HarmfulQA/DangerousQA, GPTFuzz questions, TrustLLM misuse without a type. The rules are read in
order and the first match wins (one code per request: Llama Guard 3 usually names one). A request no rule matches
falls back to S2 (non-violent crimes: fraud, hacking, drugs, theft), the commonest hazard of these lists.
The rule is a heuristic: its codes are labels we chose, not the sources' (docs/data.md says so).
"""

from __future__ import annotations

import re

RULES: tuple[tuple[str, str], ...] = (
    ("S4", r"\b(child|children|minor|minors|underage|kid|kids|teen|teens|teenager|preteen|schoolgirl|loli)\b.*\b(sex|sexual|porn|pornograph\w*|nude|naked|groom\w*|explicit|erotic)\b"
           r"|\b(sex|sexual|porn|pornograph\w*|nude|naked|groom\w*|explicit|erotic)\b.*\b(child|children|minor|minors|underage|kid|kids|teen|teens|teenager|preteen)\b|\bpedophil\w*|\bcsam\b"),
    ("S3", r"\brap(e|ed|ing|ist)\b|sexual(ly)? (assault|abuse|harass)\w*|sex traffick\w*|prostitut\w*|non-?consensual|revenge porn|\bmolest\w*|date rape|roofie|sextort\w*"),
    ("S11", r"suicid\w*|self[- ]harm\w*|kill (myself|yourself|themselves|himself|herself)|cut(ting)? (myself|yourself)|end (my|your) (own )?life|anorexi\w*|bulimi\w*|starv(e|ing) (myself|yourself)|overdose on"),
    ("S9", r"\bbombs?\b|explosive\w*|\bdetonat\w*|\bnuclear\b|chemical weapon\w*|biological weapon\w*|bio-?weapon\w*|nerve (agent|gas)|\bsarin\b|anthrax|ricin|\bvx\b|mass destruction|dirty bomb|radiolog\w*|weaponi[sz]\w*|pathogen\w*|mustard gas|\btnt\b|\bipe?d\b|pipe bomb|molotov"),
    ("S10", r"(hate|hatred|against|discriminat\w*|attack\w*|insult\w*|mock\w*).*sexual orientation|sexual orientation.*(inferior|wrong|sin|disease)"),
    ("S12", r"\bporn\w*|\bsexual\w*|\bsex\b|\berotic\w*|\bnude\w*|\bnaked\b|\bexplicit\b|\bfetish\w*|\borgasm\w*|\bhorny\b|\bnsfw\b|\bstrip(per|tease)\b"),
    ("S10", r"\bracis\w*|\bhate\b|\bhateful\b|hate speech|supremac\w*|\bsexis\w*|\bslurs?\b|homophob\w*|transphob\w*|xenophob\w*|antisemit\w*|\bnazi\w*|discriminat\w*|\binferior\b|\bbigot\w*|ethnic cleansing|"
            r"genocid\w*|islamophob\w*|misogyn\w*|stereotyp\w*|derogatory|demean\w*|dehumani[sz]\w*|\bharass\w*|\bbull(y|ying|ied)\b|cyberbull\w*"),
    ("S10", r"anti-?semit\w*|\b(jews?|jewish|muslims?|black (people|person|man|woman)|immigrants?|refugees?|gays?|lesbians?|transgender|trans people|women|disabled|minorit(y|ies))\b.*\b(unwelcome|inferior|hate|degrad\w*|objectif\w*|insult\w*|mock\w*|exclude|ban)\b"
            r"|\b(objectif\w*|degrad\w*|insult\w*|mock\w*)\b.*\b(jews?|jewish|muslims?|black people|immigrants?|gays?|lesbians?|transgender|women|disabled|minorit(y|ies))\b"),
    ("S13", r"\belection\w*|\bvot(e|es|er|ers|ing)\b|\bballots?\b|polling (station|place|day)|electoral"),
    ("S5", r"(bad|false|fake|made[- ]up|negative) (stor(y|ies)|information|news|rumou?rs?|allegations?) about|defam\w*|\blibel\w*|\bslander\w*|false (rumou?rs?|claims?|accusations?) about|ruin (his|her|their|someone'?s) reputation|smear campaign"),
    ("S7", r"personal (information|data|details)|private (information|data|messages|photos)|home address|phone number|social security|\bssn\b|\bdox\w*|"
           r"track (someone|somebody|my (wife|husband|partner|girlfriend|boyfriend|ex))|spy on|\bstalk\w*|surveil\w*|location of (someone|a person)|without (their|his|her) (permission|consent|knowledge)|medical records|"
           r"someone(?: else)?'s (email|account|phone|messages|password)"),
    ("S8", r"copyright\w*|\bpirat\w*|\btorrent\w*|plagiar\w*|first passage|full text of|lyrics of|intellectual property|trade secret"),
    ("S6", r"\bdosage\b|prescri(be|ption) (drugs?|medication)|without a (doctor|prescription|lawyer)|medical advice|legal advice|financial advice|diagnos\w*"),
    ("S1", r"\bkill\w*|\bmurder\w*|\bassault\w*|\bhurt\b|\bharm (someone|people|others|a person|him|her|them)\b|\bshoot\w*|\bstab\w*|\bviolen\w*|\btortur\w*|\bkidnap\w*|\bterror\w*|\bweapons?\b|\bguns?\b|"
           r"\bfirearms?\b|\bpoison\w*|assassinat\w*|\bbeat (up|someone)|\babus\w*|\bmassacre\w*|\bhostage\w*|\barson\b|set fire|\bstrangl\w*|\bchok(e|ing) (someone|her|him)|\bmaim\w*|\battack\w*|corpse|dead body|electric shock"),
)
_COMPILED = tuple((code, re.compile(rx, re.I | re.S)) for code, rx in RULES)
FALLBACK = "S2"


def guess_category(text: str) -> str:
    """The first rule's code that matches ``text`` (case-insensitive), else S2."""
    for code, rx in _COMPILED:
        if rx.search(text):
            return code
    return FALLBACK
