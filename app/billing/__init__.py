"""Billing: priced lines per charge period, as the books hold them.

Open months' lines are read live from the priced hourly atoms (`lines`); a closed month's are
those booked when it closed (`booked`); what closed months miss of the current truth since
is billed as corrections in the first open month (`corrections`). `service` says which lines
a range of charge periods holds, and what closing a month books: exports render the former,
periods book the latter.
"""
