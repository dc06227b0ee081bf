"""A seeded trace of contacts chatting in turns, writing each turn in bursts, with what
each fragment says.

Shared by the simulator (``bench/batching_quality.py``) and the live check
(``bench/batching_live.py``), so both replay the same people.

Who writes (``Population``): contacts are one-message writers, who fragment a
turn ``occasional`` of the time, or fragmenters (30 %), who fragment 60 % of
the time; independently, a ``fast`` share types its fragments 1-3 s apart and
the rest 5-17 s apart. A fragmented turn has 2-5 fragments. How often a
contact comes back is skewed to few visits, as in real inboxes: 1 visit (35 %),
2 (25 %), 3 (15 %), 4 (10 %), 5-8 (15 %), a day apart. **A visit is a chat**:
1 turn (35 %), 2 (25 %), 3 (20 %), 4 (10 %) or 5 (10 %); each turn after the first
is written 1-10 s after the bot's answer to the one before (``Turn.think``: the
timeline is the policy's, as live, ``app.batching.simulate.converse``). A contact who
answers the bot soon after its reply is the common case, and the one a window
learned from turns gets wrong.

What they write (``TEXT``, in Portuguese, Spanish and English; each contact keeps
one language; ``text=bench.heldout.TEXT`` takes it from the held-out corpus
instead): the kind of a fragment is drawn from its position in the burst,
with the shares of ``KINDS``. The assumption, stated once: a message sent alone
is mostly a complete request (with or without final punctuation), sometimes a
bare greeting that waits for an answer, a thank-you, a long message or media;
a burst mostly opens with a greeting or an unfinished piece, carries unfinished
pieces and plain sentences in the middle, and ends with a request. Every kind
can appear in every position (a greeting alone, a complete question that is
followed by more, a burst that ends on "and"), so no position is given away by
its text. The vocabulary is written here by hand, apart from the gateway's
classifier (``app/batching/smart.py``), which never sees these lists — but by the same
hand, so it reads them better than it will read real traffic (typos, slang,
missing accents): ``Population.misread`` gives a share of fragments a random
reading instead, to see what a worse reader costs.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.batching.simulate import Turn, Visit
from app.batching.smart import Reading, read

__all__ = ["DAY", "KINDS", "TEXT", "TURNS", "Contact", "Fragment", "Population", "bursts", "trace"]

DAY = 86400.0


@lru_cache(maxsize=4096)
def _read(text: str, attachment: str | None) -> Reading:
    return read(text, attachment)


@dataclass(frozen=True)
class Fragment:
    at: float  # arrival, seconds
    text: str  # the content ('' for media without a caption)
    kind: str  # the trace's own label (see KINDS), for reports only
    attachment: str | None = None  # "image" or "audio"
    misread: str | None = None  # a reading forced by ``Population.misread`` (a sensitivity check)

    @property
    def reading(self) -> str:
        """How the gateway reads it (``app.batching.smart.read``), as the drainer does."""
        return self.misread or _read(self.text, self.attachment).value


Contact = list[Visit]  # visits, oldest first

# Shares of each kind by position: alone (a one-message burst), first, middle, last of a burst.
KINDS: dict[str, dict[str, float]] = {
    "alone": {
        "request": 0.40,
        "plain": 0.28,
        "greeting": 0.08,
        "thanks": 0.08,
        "long": 0.06,
        "media": 0.05,
        "piece": 0.05,
    },
    "first": {"greeting": 0.50, "piece": 0.25, "plain": 0.10, "request": 0.10, "media": 0.05},
    "middle": {"piece": 0.35, "plain": 0.30, "request": 0.20, "media": 0.10, "thanks": 0.05},
    "last": {"request": 0.40, "plain": 0.35, "thanks": 0.08, "media": 0.10, "piece": 0.07},
}

TEXT: dict[str, dict[str, tuple[str, ...]]] = {
    "pt": {
        "greeting": (
            "oi",
            "olá",
            "bom dia",
            "boa tarde",
            "boa noite",
            "oi, tudo bem?",
            "olá, bom dia!",
            "oi! uma dúvida",
            "boa tarde, tudo bem?",
            "oii",
            "bom dia, uma pergunta",
        ),
        "piece": (
            "queria saber",
            "eu queria marcar um horário para",
            "vocês têm",
            "é que",
            "preciso de ajuda com",
            "então,",
            "sobre o meu pedido,",
            "ontem eu comprei um",
            "e também",
            "mas",
            "é possível",
            "tipo...",
        ),
        "plain": (
            "qual o horário de vocês no sábado",
            "quero agendar pra amanhã",
            "meu pedido não chegou ainda",
            "quanto fica a entrega",
            "vcs aceitam pix",
            "preciso trocar o tamanho",
            "pode ser depois das 15h",
            "o número do pedido é 48213",
        ),
        "request": (
            "Qual o horário de funcionamento no sábado?",
            "Vocês abrem no domingo?",
            "Quanto custa o corte de cabelo?",
            "Quero agendar para amanhã às 10h.",
            "Meu pedido ainda não chegou.",
            "Pode me mandar o cardápio?",
            "Aceitam cartão?",
            "Tem vaga para hoje à tarde?",
        ),
        "thanks": ("obrigado!", "valeu", "ok", "👍", "obrigada 🙏", "perfeito", "😊"),
        "long": (
            "Boa tarde. Comprei um produto no site na semana passada e até agora não recebi nenhuma"
            " informação sobre o envio. Já tentei ligar duas vezes e ninguém atendeu. Gostaria de saber"
            " se o pedido foi despachado e qual o prazo de entrega, porque preciso dele até sexta.",
        ),
        "caption": ("olha essa foto", "é esse aqui", "segue o comprovante"),
    },
    "es": {
        "greeting": (
            "hola",
            "buenas",
            "buenos días",
            "buenas tardes",
            "hola, ¿qué tal?",
            "hola, una consulta",
            "buen día!",
            "holaa",
        ),
        "piece": (
            "quería saber",
            "necesito ayuda con",
            "ustedes tienen",
            "es que",
            "mi pedido",
            "quería reservar para",
            "entonces,",
            "y también",
            "pero",
            "sobre mi pedido,",
        ),
        "plain": (
            "a qué hora abren mañana",
            "quiero cancelar mi reserva",
            "cuánto sale el envío",
            "aceptan mercado pago",
            "necesito cambiar la talla",
            "puede ser a las 5",
        ),
        "request": (
            "¿A qué hora abren el sábado?",
            "¿Cuánto cuesta el envío?",
            "Quiero reservar una mesa para cuatro.",
            "Mi pedido no llegó todavía.",
            "¿Aceptan tarjeta?",
            "¿Tienen turnos para mañana?",
        ),
        "thanks": ("gracias!", "dale", "ok", "👍", "perfecto", "🙏"),
        "long": (
            "Buenas tardes. Hice un pedido por la web la semana pasada y todavía no recibí ninguna"
            " información sobre el envío. Llamé dos veces y nadie contestó. Quisiera saber si el pedido"
            " salió y cuándo llega, porque lo necesito antes del viernes.",
        ),
        "caption": ("mira esta foto", "es este", "te paso el comprobante"),
    },
    "en": {
        "greeting": (
            "hi",
            "hello",
            "good morning",
            "hey",
            "hi there",
            "hello, one question",
            "hi, quick question",
            "good afternoon!",
        ),
        "piece": (
            "I wanted to ask",
            "I need help with",
            "do you have",
            "so",
            "my order",
            "I'd like to book for",
            "and also",
            "but",
            "about my order,",
            "I was wondering if",
        ),
        "plain": (
            "what time do you close today",
            "i want to cancel my booking",
            "how much is shipping",
            "do you deliver on sundays",
            "i need a different size",
            "after 3pm works",
        ),
        "request": (
            "What time do you open on Saturday?",
            "How much is delivery?",
            "I'd like to book a table for four.",
            "My order hasn't arrived yet.",
            "Do you take cards?",
            "Is there a slot tomorrow afternoon?",
        ),
        "thanks": ("thanks!", "ok thanks", "ok", "👍", "perfect", "🙏"),
        "long": (
            "Good afternoon. I ordered something on your website last week and I still have not had"
            " any news about the shipping. I called twice and nobody answered. Could you tell me if the"
            " order has left and when it will arrive, because I need it before Friday.",
        ),
        "caption": ("look at this photo", "this one", "here is the receipt"),
    },
}
LANGUAGES = {"pt": 0.5, "es": 0.25, "en": 0.25}
VISITS = {1: 0.35, 2: 0.25, 3: 0.15, 4: 0.10, 5: 0.05, 6: 0.04, 7: 0.03, 8: 0.03}
TURNS = {1: 0.35, 2: 0.25, 3: 0.20, 4: 0.10, 5: 0.10}
THINK = (1.0, 10.0)  # seconds between the bot's answer and the contact's next turn


@dataclass(frozen=True)
class Population:
    occasional: float = 0.05  # how often one-message writers fragment
    fast: float = 0.5  # share of fast typists
    fragmenters: float = 0.3
    misread: float = 0.0  # share of fragments given a random reading instead of the classifier's

    @property
    def name(self) -> str:
        name = f"occasional {self.occasional:.0%}, fast/slow {self.fast:.0%}/{1 - self.fast:.0%}"
        return name + (f", {self.misread:.0%} misread" if self.misread else "")


def _pick(rng: random.Random, shares: dict) -> object:
    return rng.choices(list(shares), weights=list(shares.values()))[0]


def _fragment(
    rng: random.Random, words: dict[str, tuple[str, ...]], position: str, at: float, misread: float
) -> Fragment:
    kind = str(_pick(rng, KINDS[position]))
    if kind != "media":
        fragment = Fragment(at, rng.choice(words[kind]), kind)
    elif rng.random() < 0.4:
        fragment = Fragment(at, "", kind, "audio")
    else:
        caption = rng.choice(words["caption"]) if rng.random() < 0.5 else ""
        fragment = Fragment(at, caption, kind, "image")
    if misread and rng.random() < misread:
        return replace(fragment, misread=rng.choice(list(Reading)).value)
    return fragment


def _turn(
    rng: random.Random,
    words: dict[str, tuple[str, ...]],
    fragments: float,
    gaps: tuple[float, float],
    misread: float,
) -> list[Fragment]:
    """One turn's fragments, ``at`` counted from its first."""
    if rng.random() >= fragments:
        return [_fragment(rng, words, "alone", 0.0, misread)]
    count = rng.randint(2, 5)
    times = [0.0]
    for _ in range(count - 1):
        times.append(times[-1] + rng.uniform(*gaps))
    positions = ["first", *["middle"] * (count - 2), "last"]
    return [_fragment(rng, words, p, t, misread) for p, t in zip(positions, times, strict=True)]


def trace(
    contacts: int,
    seed: int,
    population: Population = Population(),
    text: dict[str, dict[str, tuple[str, ...]]] = TEXT,
) -> list[Contact]:
    rng = random.Random(seed)
    result = []
    for _ in range(contacts):
        fragments = 0.6 if rng.random() < population.fragmenters else population.occasional
        gaps = (1.0, 3.0) if rng.random() < population.fast else (5.0, 17.0)
        words = text[str(_pick(rng, LANGUAGES))]
        visits = []
        for day in range(int(_pick(rng, VISITS))):
            turns = [
                Turn(
                    0.0 if number == 0 else rng.uniform(*THINK),
                    _turn(rng, words, fragments, gaps, population.misread),
                )
                for number in range(int(_pick(rng, TURNS)))
            ]
            visits.append(Visit(day * DAY + rng.uniform(0, 3600), turns))
        result.append(visits)
    return result


def bursts(contact: Contact, answer_after: float = 1.0) -> list[list[Fragment]]:
    """A contact's turns as bursts at fixed times: each turn begins ``think`` after the one
    before ended plus ``answer_after`` (a bot's answer), as a contact answered by a batch
    closing at once would see it (the company prior is learned from these gaps; a live
    check stores them as history)."""
    found = []
    for visit in contact:
        at = visit.start
        for turn in visit.turns:
            at += turn.think
            found.append([replace(f, at=at + f.at) for f in turn.fragments])
            at = found[-1][-1].at + answer_after
    return found
