#!/usr/bin/env python3
"""Plots a rehearsal's samples (samples.csv from ferry-demo): replication lag and the share
of traffic on AWS over time, with the states as a band. Usage: plot.py samples.csv out.png"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
t = [float(r["seconds"]) for r in rows]
lag = [float(r["lag_seconds"]) if r["lag_seconds"] else float("nan") for r in rows]
aws = [float(r["aws_percent"]) for r in rows]
fig, ax1 = plt.subplots(figsize=(11, 5))
ax1.plot(t, lag, color="tab:blue", label="replication lag (s)")
ax1.set_xlabel("seconds since the execution started")
ax1.set_ylabel("lag (s)", color="tab:blue")
ax2 = ax1.twinx()
ax2.step(t, aws, where="post", color="tab:orange", label="traffic on AWS (%)")
ax2.set_ylabel("traffic on AWS (%)", color="tab:orange")
ax2.set_ylim(-2, 102)
# State bands: where each state starts.
last = None
for x, r in zip(t, rows):
    if r["state"] != last:
        ax1.axvline(x, color="grey", alpha=0.25, linewidth=0.8)
        ax1.text(x, ax1.get_ylim()[1], r["state"], rotation=90, fontsize=7, va="top", alpha=0.7)
        last = r["state"]
fig.legend(loc="upper left", bbox_to_anchor=(0.07, 0.9))
ax1.set_title("Ferry rehearsal: replication lag and traffic shift")
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print(sys.argv[2])
