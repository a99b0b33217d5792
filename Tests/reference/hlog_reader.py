"""Reads an HdrHistogram interval log with the hdrhistogram package's own HistogramLogReader
and prints, per tag ("" for the untagged histograms), the intervals, the total count and the
merged histogram's p50, p99 and max, as JSON: what a user of HdrHistogram's tools would see."""
import json
import sys

from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

reference = HdrHistogram(1, 3600 * 1000 * 1000, 3)
reader = HistogramLogReader(sys.argv[1], reference)
tags = {}
while True:
    histogram = reader.get_next_interval_histogram()
    if histogram is None:
        break
    tag = histogram.get_tag() or ""
    entry = tags.setdefault(tag, {"intervals": 0, "merged": HdrHistogram(1, 3600 * 1000 * 1000, 3)})
    entry["intervals"] += 1
    entry["merged"].add(histogram)
print(json.dumps({
    tag: {
        "intervals": entry["intervals"],
        "count": entry["merged"].get_total_count(),
        "p50": entry["merged"].get_value_at_percentile(50),
        "p99": entry["merged"].get_value_at_percentile(99),
        "max": entry["merged"].get_max_value(),
    }
    for tag, entry in tags.items()
}))
