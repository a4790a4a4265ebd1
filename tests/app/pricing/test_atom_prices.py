"""The books' price expressions are built once per content of the rate cards: read again
unchanged, they are the same objects; any change to a rate gives new ones."""

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.models import EnergyRate, Rate
from app.pricing.atom_prices import atom_prices

DEFAULT = 2_000_000
JANUARY = datetime(2025, 1, 1, tzinfo=UTC)
MADE = {"effective_from": JANUARY, "created_at": JANUARY, "created_by": "test"}


def test_price_expressions_are_rebuilt_exactly_when_the_rates_change(db: Session) -> None:
    db.add(Rate(gpu_model="NVIDIA H800", micro_usd_per_gpu_hour=2_000_000, **MADE))
    db.commit()
    first = atom_prices(db, default_micro_usd=DEFAULT)

    assert atom_prices(db, default_micro_usd=DEFAULT) is first
    assert atom_prices(db, default_micro_usd=DEFAULT + 1) is not first

    db.execute(update(Rate).values(micro_usd_per_gpu_hour=2_400_000))
    db.commit()
    restated = atom_prices(db, default_micro_usd=DEFAULT)
    assert restated is not first
    assert "2400000" in str(restated.rate.compile(compile_kwargs={"literal_binds": True}))

    db.add(EnergyRate(micro_usd_per_kwh=150_000, **MADE))
    db.commit()
    with_energy = atom_prices(db, default_micro_usd=DEFAULT)
    assert with_energy is not restated
    assert "150000" in str(with_energy.energy_rate.compile(compile_kwargs={"literal_binds": True}))
