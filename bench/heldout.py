"""Held-out text: what the batching reader (``app.batching.smart.read``) is judged on, written apart
from its word lists and from the trace's own lists (``bench/trace.py``'s ``TEXT``).

The reader's lists and the trace's text came from one hand, so the trace's "smart" figures
were measured on the reader's training data. These fragments were written separately, as
people write on WhatsApp: abbreviations ("vc", "pq", "td bem", "q", "xq", "u", "pls"),
missing accents and capitals, typos, stretched letters, emoji, voice-note transcripts run
together, answers to the bot. Each is filed under the trace's kinds, so the trace can take
its text from here (``TEXT``), and each kind says what the writer meant:

* ``greeting``, ``piece``: more is coming (a greeting before the question, a sentence cut
  off where the next fragment goes on);
* ``request``, ``plain``, ``thanks``, ``long``: the message is whole (a question or request
  with or without its final punctuation, an answer, a thank-you, long writing).

``bench/reader_confusion.py`` reports how the reader reads the trace's lists and this
corpus, side by side.
"""

from __future__ import annotations

__all__ = ["MEANS_MORE", "TEXT"]

MEANS_MORE = frozenset({"greeting", "piece"})  # the other kinds are whole messages

TEXT: dict[str, dict[str, tuple[str, ...]]] = {
    "pt": {
        "greeting": (
            "oii boa tarde",
            "ola td bem?",
            "bom diaaa",
            "e ai",
            "boa noite!!",
            "oi tudo bom",
            "Olá!",
            "oi oi",
            "bom dia 😊",
            "ola, boa tarde",
            "oie",
            "boa tarde td bom?",
            "Bom dia, tudo certo?",
        ),
        "piece": (
            "então eu queria ver",
            "é sobre aquele",
            "vc sabe se",
            "pq eu preciso de",
            "to precisando",
            "deixa eu te perguntar uma coisa",
            "eu vi no insta que vcs",
            "minha filha vai",
            "a consulta que eu marquei pra",
            "queria saber um negocio",
            "tenho uma duvida sobre o",
            "fiz um pedido e",
            "é que assim",
        ),
        "plain": (
            "qto custa a consulta",
            "vcs entregam no centro",
            "preciso remarcar pra semana q vem",
            "meu nome é joana silva",
            "o cpf é 123.456.789-10",
            "pode ser na quinta de manha",
            "ainda nao chegou meu pedido",
            "aceita cartao de credito",
            "tem estacionamento ai",
            "queria falar com a dra paula",
            "ja paguei o boleto",
            "sim pode ser",
            "nao esse nao",
        ),
        "request": (
            "Vcs abrem no sabado?",
            "qual o valor da limpeza de pele?",
            "Consigo marcar pra amanhã de manhã?",
            "Vocês fazem entrega no bairro Jardim?",
            "tem horario hj a tarde??",
            "Pode me mandar o endereço?",
            "quanto tempo demora a entrega?",
            "Aceitam pix?",
            "Meu pedido 5521 já saiu?",
            "Da pra trocar o tamanho?",
            "preciso cancelar minha consulta de amanha.",
            "Quero o plano mensal, por favor.",
            "qual o horario de vcs no domingo?",
        ),
        "thanks": ("brigado!", "vlw", "ok obg", "show", "blz entao", "👍🏻", "❤️", "top, obrigada", "tá bom"),
        "long": (
            "oi boa tarde, entao eu fiz o pedido semana passada pelo site e ate agora nada, ja mandei"
            " email duas vezes e ninguem responde, queria saber se ta tudo certo com a entrega pq vou"
            " viajar no sabado e preciso das coisas antes",
            "Bom dia! Minha mãe tem consulta marcada com o dr Carlos na terça as 14h mas ela nao vai"
            " conseguir ir porque está gripada, tem como remarcar pra semana que vem no mesmo horário?",
        ),
        "caption": ("esse aqui", "olha o comprovante", "ta assim", "foto do produto"),
    },
    "es": {
        "greeting": (
            "holaa buen dia",
            "buenas buenas",
            "ola q tal",
            "hola!",
            "buen diaa",
            "buenas tardes 🙂",
            "que tal",
            "hola, como estan?",
            "buenas noches!!",
            "holi",
        ),
        "piece": (
            "les queria preguntar por",
            "mi consulta es sobre",
            "tengo una duda con",
            "xq necesito",
            "el pedido que hice ayer",
            "fijate que",
            "vi en instagram que",
            "mi hijo tiene",
            "necesito saber si",
            "es por lo del",
            "bueno la cosa es",
        ),
        "plain": (
            "cuanto sale el turno",
            "hacen envios a cordoba",
            "quiero cambiar el horario",
            "mi nombre es lucia perez",
            "el numero de pedido es 7731",
            "puede ser el jueves a la tarde",
            "todavia no me llego",
            "aceptan transferencia",
            "si dale",
            "no ese no",
            "ya pague",
        ),
        "request": (
            "Abren el domingo?",
            "cuanto cuesta la limpieza?",
            "¿Me pasan la direccion?",
            "tienen turno para mañana??",
            "¿Hacen factura A?",
            "Se puede pagar en cuotas?",
            "Quiero cancelar mi reserva, por favor.",
            "¿A que hora cierran hoy?",
            "Mi pedido 8812 ya salio?",
            "puedo cambiar el talle?",
        ),
        "thanks": ("graciass", "dale gracias", "genial!", "ok", "👌", "mil gracias 🙏", "perfecto gracias"),
        "long": (
            "hola buenas tardes, hice una compra la semana pasada por la pagina y todavia no me llego"
            " nada, escribi al mail y no me contestaron, queria saber si el envio salio porque me voy de"
            " viaje el sabado y lo necesito antes",
        ),
        "caption": ("este", "mira el comprobante", "asi esta", "foto"),
    },
    "en": {
        "greeting": (
            "hiii",
            "hey there!",
            "morning",
            "hello 👋",
            "hi hi",
            "good evening",
            "hey!",
            "hello, how r u",
            "hiya",
            "good afternoon 🙂",
        ),
        "piece": (
            "so basically",
            "I was gonna ask about",
            "quick q about my",
            "can u tell me if",
            "my appointment on",
            "the thing is",
            "i ordered something and",
            "regarding the",
            "just wanted to check whether",
            "my daughter has",
            "wondering if u",
        ),
        "plain": (
            "how much is a cleaning",
            "do u deliver to brooklyn",
            "need to move my appointment",
            "my name is sam lee",
            "order number is 4471",
            "thursday afternoon works",
            "it still hasnt arrived",
            "u take apple pay",
            "yes please",
            "no not that one",
            "already paid",
        ),
        "request": (
            "r u open on sunday?",
            "how much for a haircut??",
            "Can I book for tomorrow morning?",
            "Do you deliver to Queens?",
            "what time do u close today?",
            "Can you send me the address please?",
            "Is my order 5521 on its way?",
            "can i swap the size?",
            "I need to cancel tomorrow's appointment.",
            "Do you have anything at 5pm?",
        ),
        "thanks": ("thx!", "ty", "cool thanks", "great", "👍", "awesome 🙏", "ok got it"),
        "long": (
            "hi there, i placed an order on your site last week and still havent heard anything, sent"
            " two emails and no reply, can you check if it shipped because im travelling on saturday"
            " and really need it before then",
        ),
        "caption": ("this one", "here's the receipt", "looks like this", "pic"),
    },
}
