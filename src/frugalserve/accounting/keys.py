"""API keys: create (the secret is shown once), list, revoke, load.

A secret is ``fs_<key id>_<43 random url-safe chars>`` (256 bits). Only its SHA-256 is stored: a
high-entropy secret needs no slow hash. The key id inside the secret finds the row; the hashes are then
compared with :func:`hmac.compare_digest`, so the time an answer takes says nothing about the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from frugalserve.accounting.store import api_keys

SECRET_PREFIX = "fs_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    secret_hash: str
    prefix: str
    created_at: float
    revoked_at: float | None = None
    budget_usd_per_day: float | None = None
    budget_usd_per_month: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    models: tuple[str, ...] | None = None  # None: every model
    default_model: str | None = None  # for requests that name no model (e.g. "auto")
    tiers: tuple[str, ...] | None = None  # the tiers model "auto" may route this key's requests to; None: all

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


def format_usd(amount: float) -> str:
    """Dollars as people write them: ``$0.000001``, ``$0.01``, ``$1,250.00`` (never ``1e-06``).

    Six significant digits, at least two decimals; used wherever the CLI or an error message shows a budget.
    """
    text = format(Decimal(f"{abs(amount):.6g}"), ",f")
    whole, _, cents = text.partition(".")
    return f"{'-' if amount < 0 else ''}${whole}.{cents.ljust(2, '0')}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str | None:
    """The key id a presented secret claims to belong to (None when it is not one of ours)."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    parts = secret[len(SECRET_PREFIX) :].split("_", 1)
    return parts[0] if len(parts) == 2 and parts[0] else None


def matches(key: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(key.secret_hash, hash_secret(secret))


def _row_to_key(row: sa.Row) -> ApiKey:
    m = row._mapping
    models = m["models"]
    return ApiKey(
        id=m["id"],
        name=m["name"],
        secret_hash=m["secret_hash"],
        prefix=m["prefix"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        budget_usd_per_day=m["budget_usd_per_day"],
        budget_usd_per_month=m["budget_usd_per_month"],
        rpm=m["rpm"],
        tpm=m["tpm"],
        models=_split(models),
        default_model=m["default_model"],
        tiers=_split(m["tiers"]),
    )


def _split(value: str | None) -> tuple[str, ...] | None:
    return tuple(x for x in value.split(",") if x) if value is not None else None


def create_key(
    engine: Engine,
    name: str,
    now: float,
    *,
    budget_usd_per_day: float | None = None,
    budget_usd_per_month: float | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    models: tuple[str, ...] | None = None,
    default_model: str | None = None,
    tiers: tuple[str, ...] | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key; returns it with its secret, which is not kept anywhere."""
    key_id = secrets.token_hex(6)
    secret = f"{SECRET_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        id=key_id,
        name=name,
        secret_hash=hash_secret(secret),
        prefix=secret[: len(SECRET_PREFIX) + len(key_id) + 5],
        created_at=now,
        budget_usd_per_day=budget_usd_per_day,
        budget_usd_per_month=budget_usd_per_month,
        rpm=rpm,
        tpm=tpm,
        models=models,
        default_model=default_model,
        tiers=tiers,
    )
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert().values(
                id=key.id,
                name=key.name,
                secret_hash=key.secret_hash,
                prefix=key.prefix,
                created_at=key.created_at,
                budget_usd_per_day=budget_usd_per_day,
                budget_usd_per_month=budget_usd_per_month,
                rpm=rpm,
                tpm=tpm,
                models=",".join(models) if models is not None else None,
                default_model=default_model,
                tiers=",".join(tiers) if tiers is not None else None,
            )
        )
    return key, secret


def list_keys(engine: Engine) -> list[ApiKey]:
    with engine.connect() as conn:
        return [_row_to_key(r) for r in conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at))]


def load_keys(engine: Engine) -> dict[str, ApiKey]:
    """Every key by id, revoked ones included (so a revoked key answers 'revoked', not 'unknown')."""
    return {k.id: k for k in list_keys(engine)}


def revoke_key(engine: Engine, id_or_name: str, now: float) -> list[str]:
    """Revoke the key with this id, or every active key with this name; returns the ids revoked."""
    c = api_keys.c
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.select(c.id).where(sa.or_(c.id == id_or_name, c.name == id_or_name), c.revoked_at.is_(None))
            )
        ]
        if ids:
            conn.execute(api_keys.update().where(c.id.in_(ids)).values(revoked_at=now))
    return ids
