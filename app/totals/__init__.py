"""Where usage totals live, and how they are kept right.

Three levels, each a table of the same sums (GPU-µs, busy GPU-µs, mJ) per job (or a
cluster's idle capacity, job null), GPU model and UTC period:

- `usage_hourly`, per hour: what every figure is defined from;
- `usage_daily`, per day, and `usage_monthly`, per month: the hourly level summed.

And one level keyed by labels: `usage_model_hourly`, GPU-time per job model and phase (''
for none), cluster and hour, for a model's busiest hour (`peak_gpus`).

Kept: ingest adds a batch's sums to every level in its own transaction (`store.Totals`),
so the levels never disagree with one another, whatever is committed or rolled back. The
day and month levels hold usage by job id, not money and not labels, so neither a rate set
or restated (prices are applied when a figure is read) nor a job relabelled (labels are
joined when a figure is read) changes one of their rows. The model level does hold labels:
a relabelling moves the job's hours from its old (model, phase) to its new one in the same
transaction (`store.move_job_hours`), under the job's row lock, which ingest takes before
it reads the labels it adds under. Migration 0013 filled the new levels from the hours
stored before it; `gpucost db check-totals` compares every row with its hours, and
`--repair` sums them again.

Read: a range of hours is answered from the coarsest rows that lie whole within it
(`levels.cover`): whole months from the month level, whole days at its edges from the day
level, the hours left from the hourly level. A period in which some price changes (a rate
card's, an energy rate's or a scenario's `effective_from`) is read one level finer, so that
every row read is priced at one price, exactly as its hours would be. So a figure is the
same, digit for digit, as the hourly level gives, and costs grow with the periods and the
answer's size, not with the hours underneath.
"""
