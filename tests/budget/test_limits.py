from __future__ import annotations

import pytest

from frugalserve.budget.limits import LimitsConfig
from frugalserve.config import ConfigError, parse


def test_defaults_match_the_issue() -> None:
    limits = parse(LimitsConfig, None)
    assert limits.image.max_tokens == 1024 and limits.image.short_edge == 768
    assert limits.max_tokens_policy == "clamp" and limits.fetch.allow_hosts == ()


def test_yaml_keys_are_parsed_into_frozen_sections() -> None:
    limits = parse(
        LimitsConfig,
        {
            "max_context_tokens": 8192,
            "max_new_tokens": 512,
            "image": {"max_tokens": 256, "format": "webp"},
            "fetch": {"allow_hosts": ["images.internal"], "timeout_s": 3},
        },
        "pools[0].limits",
    )
    assert limits.image.format == "webp" and limits.fetch.allow_hosts == ("images.internal",)
    assert limits.fetch.timeout_s == 3.0


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"image": {"max_tokens": 10}}, "pools[0].limits.image.max_tokens"),
        ({"image": {"qualty": 10}}, "pools[0].limits.image.qualty"),
        ({"max_tokens_policy": "truncate"}, "pools[0].limits.max_tokens_policy"),
        ({"max_context_tokens": 0}, "pools[0].limits.max_context_tokens"),
        ({"fetch": {"timeout_s": 0}}, "pools[0].limits.fetch.timeout_s"),
    ],
)
def test_bad_values_name_their_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(LimitsConfig, data, "pools[0].limits")
    assert err.value.path == key
