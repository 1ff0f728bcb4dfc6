"""Small helpers that build the labelled set's items (OpenAI chat bodies with image placeholders)."""

from __future__ import annotations

from typing import Any

Item = dict[str, Any]


class Images:
    """The placeholders one item uses, with their sizes and kinds (the harness renders each as a PNG)."""

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {}

    def __call__(self, kind: str, width: int, height: int, name: str = "") -> str:
        url = f"image://{kind}-{width}x{height}{'-' + name if name else ''}"
        if url in self.specs:
            raise ValueError(f"{url} used twice in one item")
        self.specs[url] = {"width": width, "height": height, "kind": kind}
        return url


def user(text: str, *images: str) -> dict[str, Any]:
    """A user message: a string, or image parts first and the text after (how most clients send them)."""
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in images]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def system(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def body(*messages: dict[str, Any], max_tokens: int | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "auto", "messages": list(messages)}
    if max_tokens is not None:
        out["max_tokens"] = max_tokens
    out.update(extra)
    return out


def tool(name: str, description: str, /, **params: str) -> dict[str, Any]:
    """An OpenAI function tool whose parameters are all strings (enough for routing)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {k: {"type": "string", "description": v} for k, v in params.items()},
                "required": list(params),
            },
        },
    }


def schema(title: str, /, **fields: str) -> dict[str, Any]:
    """A response_format json_schema with the given field types ("string", "number", "array")."""
    props: dict[str, Any] = {}
    for k, t in fields.items():
        props[k] = {"type": "array", "items": {"type": "string"}} if t == "array" else {"type": t}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": title,
            "strict": True,
            "schema": {"type": "object", "properties": props, "required": list(fields), "additionalProperties": False},
        },
    }


class Collector:
    """Accumulates items; ids are given per category in the order added."""

    def __init__(self) -> None:
        self.items: list[Item] = []

    def add(
        self,
        category: str,
        lang: str,
        tier: str,
        why: str,
        request: dict[str, Any],
        images: Images | None = None,
        headers: dict[str, str] | None = None,
        source: str = "generated",
    ) -> None:
        if tier not in ("S", "M", "L"):
            raise ValueError(f"bad tier {tier!r}")
        item: Item = {"category": category, "lang": lang, "source": source, "request": request}
        if headers:
            item["headers"] = headers
        item["images"] = images.specs if images is not None else {}
        item["tier"] = tier
        item["why"] = why
        self.items.append(item)
