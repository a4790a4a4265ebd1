"""How far raw usage has been pruned: reports older than that can no longer be told
apart from resends, so the service refuses them."""

from datetime import datetime

from sqlalchemy import Integer
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime


class PruneMark(Base):
    __tablename__ = "prune_marks"

    # A single row, id 1.
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pruned_before: Mapped[datetime] = mapped_column(UTCDateTime)
