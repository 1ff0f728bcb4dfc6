"""Chit-chat, short factual Q&A, translation and questions in other languages. Each entry carries its own tier and the reason for it."""

# ruff: noqa: RUF001  (Chinese text uses full-width punctuation)

from __future__ import annotations

import random

from builder import Collector, body, system, user
from corpus import chinese, english


def chit_chat(c: Collector, rng: random.Random) -> None:
    s = "S"
    small = [
        ("en", "hi!", "A greeting: any model answers it; the smallest tier is fastest and cheapest."),
        ("en", "good morning, how are you doing today?", "Small talk with no task in it; S answers it well."),
        ("en", "tell me a joke about cats", "A short joke needs fluency, not reasoning; S is enough."),
        ("en", "thanks, that helped a lot!", "An acknowledgement; the reply is one friendly sentence."),
        ("en", "what's a fun name for a goldfish?", "Light creative suggestion, a few words of output."),
        ("en", "I'm bored, suggest three things to do tonight", "A short list of casual ideas; S does this fine."),
        ("en", "write a two-line birthday wish for my colleague Anna", "Two lines of friendly text: S."),
        ("en", "lol ok", "A filler message; the cheapest tier answers it."),
        ("en", "Can you recommend a cozy sci-fi book?", "One recommendation from common knowledge: S."),
        ("en", "Say something nice to cheer me up, I failed my driving test", "Short empathetic reply: S."),
        ("zh", "你好！", "中文问候，小模型即可流畅回答。"),
        ("zh", "今天心情不太好，陪我聊聊天吧", "Casual Chinese chat; Qwen's 2B is fluent in Chinese small talk."),
        ("zh", "给我讲个笑话", "A joke in Chinese: short, no reasoning, S."),
        ("zh", "周末去哪里玩比较好？推荐一下", "Casual weekend suggestions in Chinese; S is enough."),
        ("zh", "谢谢你的帮助！", "A thank-you; one sentence reply."),
        ("zh", "帮我给同事写一句生日祝福", "One line of Chinese greeting text: S."),
        ("es", "¡Hola! ¿Qué tal tu día?", "Spanish greeting; S handles common languages for small talk."),
        ("fr", "Merci beaucoup, bonne soirée !", "A French thank-you; trivial reply."),
        ("ja", "こんにちは、元気？", "Japanese greeting; S is fluent enough for this."),
        ("de", "Erzähl mir einen kurzen Witz", "A short German joke; S."),
    ]
    for lang, text, why in small:
        c.add("chit-chat", lang, s, why, body(user(text)))
    c.add(
        "chit-chat",
        "en",
        "M",
        "Emotional, open-ended advice about a career decision: a nuanced, careful answer is worth the 8B.",
        body(
            user(
                "I've been feeling burned out at work for months. My manager is supportive but the workload "
                "isn't changing. I'm thinking of quitting without another job lined up. Can you help me think "
                "it through?"
            ),
            max_tokens=800,
        ),
    )
    c.add(
        "chit-chat",
        "zh",
        "M",
        "Relationship advice in Chinese with context to weigh; a thoughtful reply is worth M, not S.",
        body(
            user(
                "我和室友因为家务分配吵了好几次，他总说自己很忙。我不想搬走，但也不想一直忍着。你觉得我该怎么和他沟通？"
            )
        ),
    )
    c.add(
        "chit-chat",
        "en",
        "S",
        "A persona system prompt and a greeting: still small talk, S.",
        body(system("You are Pip, a cheerful assistant for a bakery's website."), user("hey pip! what's good today?")),
    )
    c.add(
        "chit-chat",
        "en",
        "S",
        "Casual roleplay for a couple of lines; no task, S.",
        body(user("pretend you're a pirate and say good night to me"), max_tokens=60),
    )
    rng.random()


def factual(c: Collector, rng: random.Random) -> None:
    short = [
        ("en", "What is the capital of Australia?", "A single fact from common knowledge: S."),
        ("en", "At what temperature does water boil at sea level in Fahrenheit?", "One well-known number: S."),
        ("en", "Who wrote 'Pride and Prejudice'?", "Simple recall: S."),
        ("en", "What does HTTP status 429 mean?", "A well-known definition in one sentence: S."),
        ("en", "How many bytes are in a kibibyte?", "A definition with one number: S."),
        ("en", "What's the difference between a virus and a bacterium, in one sentence?", "Asked for one sentence: S."),
        ("en", "Which planet has the most moons?", "Short factual recall: S."),
        ("en", "What year did the Berlin Wall fall?", "One date: S."),
        ("en", "what port does postgres use by default", "A one-word technical fact: S."),
        ("zh", "长城有多长？", "简单事实问答，小模型即可。"),
        ("zh", "光速是多少？", "One physical constant, asked in Chinese: S."),
        ("zh", "水的化学式是什么？", "Trivial chemistry fact in Chinese: S."),
        ("zh", "李白是哪个朝代的诗人？", "Short Chinese literature fact: S."),
        ("zh", "HTTPS默认端口是多少？", "A one-number technical fact: S."),
        ("ko", "서울의 인구는 대략 얼마인가요?", "Korean short factual question: S."),
        ("ar", "ما هي عاصمة كندا؟", "Arabic one-fact question: S."),
    ]
    for lang, text, why in short:
        c.add("factual", lang, "S", why, body(user(text)))
    medium = [
        (
            "en",
            "Explain how TCP congestion control works: slow start, congestion avoidance (AIMD), fast retransmit "
            "and fast recovery. Use an example with numbers.",
            1500,
            "A multi-part technical explanation with a worked example; 8B is accurate where 2B blurs details.",
        ),
        (
            "en",
            "Compare PostgreSQL and MySQL for a write-heavy workload with many small transactions. What would "
            "you pick and why?",
            1200,
            "A trade-off comparison that must be correct on details (MVCC, locking): M.",
        ),
        (
            "zh",
            "请详细解释一下量子纠缠是什么，为什么它不能用来超光速传递信息？",
            1200,
            "Conceptual physics explanation in Chinese with a subtle point (no-signalling): M.",
        ),
        (
            "en",
            "Why do vaccines sometimes need booster doses? Explain the immunology simply but accurately.",
            900,
            "An explanatory answer where accuracy matters (medicine); M rather than S.",
        ),
        (
            "zh",
            "Kubernetes里的Deployment和StatefulSet有什么区别？各自适合什么场景？",
            1000,
            "Technical comparison in Chinese with scenarios: M.",
        ),
    ]
    for lang, text, mt, why in medium:
        c.add("factual", lang, "M", why, body(user(text), max_tokens=mt))
    c.add(
        "factual",
        "en",
        "L",
        "Evaluate competing explanations with evidence and a conclusion: long, careful reasoning, L.",
        body(
            user(
                "What caused the 2008 financial crisis? Present the three main competing explanations, the evidence "
                "for and against each, and say which you find most convincing and why. About 1500 words."
            ),
            max_tokens=3000,
        ),
    )
    c.add(
        "factual",
        "en",
        "S",
        "A short yes/no fact with a one-word answer requested: S.",
        body(user("Is a tomato a fruit? Answer yes or no."), max_tokens=5),
    )
    rng.random()


def translation(c: Collector, rng: random.Random) -> None:
    short = [
        ("en", "Translate 'Where is the train station?' into French.", "A short phrase: S."),
        ("zh", "翻译成英文：我明天要去开会。", "One short Chinese sentence to English: S."),
        ("en", "How do you say 'thank you very much' in Japanese?", "A common phrase: S."),
        ("zh", "把‘Happy New Year’翻译成中文。", "A greeting into Chinese: S."),
        ("en", "Translate to Spanish: 'The meeting is moved to Thursday.'", "One sentence: S."),
        ("en", "German for 'emergency exit'?", "One term: S."),
    ]
    for lang, text, why in short:
        c.add("translation", lang, "S", why, body(user(text), max_tokens=60))
    para = english("paper", 400, 100)
    medium = [
        (
            "en",
            "Translate this abstract into Chinese, keeping technical terms accurate:\n\n" + para,
            "A technical paragraph into Chinese with terminology: M.",
        ),
        (
            "zh",
            "把下面这段翻译成英文，语气要正式：\n\n" + chinese("report", 500, 101),
            "A formal Chinese business paragraph into English: M.",
        ),
        (
            "en",
            "Translate this README section into Japanese:\n\n## Installation\n\nRun `pip install frugalserve`, then "
            "copy `config.example.yaml` to `config.yaml` and set the pool URLs. The gateway listens on port 8000.",
            "Technical prose with code kept intact: M.",
        ),
        (
            "en",
            "Translate this customer complaint into German and soften the tone slightly:\n\n"
            "Your app charged me twice and nobody answers my emails. This is unacceptable.",
            "Translation with a tone change: M.",
        ),
        (
            "zh",
            "把这封邮件翻译成日语，用敬语：\n\n王经理您好，关于下周的合作会议，我们希望改到周四下午两点，不知是否方便？",
            "Chinese to Japanese with keigo: M.",
        ),
        ("en", "Translate into Korean:\n\n" + english("meeting", 300, 102), "A paragraph into Korean: M."),
    ]
    for lang, text, why in medium:
        c.add("translation", lang, "M", why, body(user(text), max_tokens=1200))
    c.add(
        "translation",
        "ru",
        "S",
        "One short Russian business sentence to English: S.",
        body(
            user("Переведи на английский: Мы перенесли релиз на следующую неделю из-за проблем с оплатой."),
            max_tokens=60,
        ),
    )
    long = [
        (
            "en",
            "Translate this contract into Chinese. Use consistent legal terminology throughout and keep the clause "
            "numbering.\n\n" + english("contract", 4000, 110),
            "A 4,000-word legal translation that must stay consistent: long, high-stakes, L.",
        ),
        (
            "zh",
            "请把下面这段小说译成英文，保留作者的语气和节奏，不要直译。\n\n" + chinese("report", 2500, 111),
            "Literary Chinese-to-English with style preserved over 2,500 characters: L.",
        ),
        (
            "en",
            "Translate this paper section into French, then list every term whose French translation is ambiguous "
            "and justify your choice.\n\n" + english("paper", 3000, 112),
            "Long translation plus a reasoned terminology note: L.",
        ),
    ]
    for lang, text, why in long:
        c.add("translation", lang, "L", why, body(user(text), max_tokens=8000))


def multilingual(c: Collector, rng: random.Random) -> None:
    items = [
        ("ja", "S", "東京で一番高いビルは？", "Short Japanese fact: S."),
        ("ko", "S", "김치찌개 레시피 알려줘", "A common recipe in Korean: S."),
        ("ar", "S", "كم عدد أيام السنة الكبيسة؟", "Short Arabic fact: S."),
        ("fr", "S", "Résous : 3x + 5 = 20", "A one-step equation in French: S."),
        ("de", "S", "Wie spät ist es in Tokio, wenn es in Berlin 12 Uhr ist?", "A time-zone difference: S."),
        ("es", "S", "¿Cuál es el río más largo del mundo?", "Short Spanish fact: S."),
        ("pt", "S", "Qual é a capital do Brasil?", "Short Portuguese fact: S."),
        (
            "ru",
            "M",
            "Объясни, как работает сборщик мусора в Java (G1), с примерами настроек.",
            "A technical explanation in Russian: M.",
        ),
        (
            "es",
            "M",
            "Explícame la diferencia entre TCP y UDP con ejemplos de cuándo usar cada uno.",
            "A technical comparison in Spanish: M.",
        ),
        (
            "de",
            "M",
            "Schreib mir eine höfliche Kündigung für meinen Handyvertrag mit Begründung und Fristen.",
            "A formal German letter with correct legal form: M.",
        ),
        (
            "ja",
            "M",
            "Pythonでデコレーターの使い方を例を使って説明してください。",
            "A programming explanation in Japanese: M.",
        ),
        (
            "ko",
            "M",
            "주식과 채권의 차이를 초보자에게 설명해 주세요. 장단점도 알려 주세요.",
            "An explanation in Korean: M.",
        ),
        (
            "fr",
            "M",
            "Rédige une lettre de motivation pour un poste de data engineer, en 300 mots.",
            "A 300-word cover letter in French: M.",
        ),
        ("ar", "M", "اشرح الفرق بين الذكاء الاصطناعي وتعلم الآلة مع أمثلة.", "An explanation in Arabic: M."),
        (
            "zh",
            "M",
            "帮我debug一下这个React component，点按钮之后state没更新：\n```\nconst [n, setN] = useState(0);\n"
            "return <button onClick={() => { n++; setN(n) }}>{n}</button>\n```",
            "Chinese-English code-switching code question: M.",
        ),
        (
            "ja",
            "L",
            "次の命題を証明してください：任意の素数 p > 3 について、p^2 - 1 は 24 で割り切れる。さらに一般化できるか論じてください。",
            "A proof plus a generalisation in Japanese: L.",
        ),
        (
            "ru",
            "L",
            "Спроектируй архитектуру системы бронирования билетов на 10 млн пользователей: хранилище, "
            "консистентность, кэширование, отказоустойчивость. Обоснуй каждое решение.",
            "A full system design in Russian: L.",
        ),
        ("vi", "S", "Thủ đô của Việt Nam là gì?", "Short Vietnamese fact: S."),
        ("th", "S", "สวัสดีครับ วันนี้อากาศเป็นอย่างไรบ้าง", "Thai small talk: S."),
        ("hi", "M", "मशीन लर्निंग में ओवरफिटिंग क्या है और इसे कैसे रोका जाए?", "A technical explanation in Hindi: M."),
    ]
    for lang, tier, text, why in items:
        c.add("multilingual", lang, tier, why, body(user(text), max_tokens=1500 if tier == "L" else 600))
    rng.random()
