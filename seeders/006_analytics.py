"""Fifteen application metrics: one day's usage, performance, storage and content figures.

The table has no unique key, so the seeder inserts only the (metric, recorded_at)
pairs not already there; a re-run adds nothing.
"""

from datetime import datetime

from db.models import Analytics

kind = "sample"  # demo data: db.setup --no-sample leaves it out

RECORDED_AT = datetime(2024, 12, 31, 23, 59)  # the day's totals, taken before midnight


def _metric(metric, value, category, unit):
    return {
        "metric": metric,
        "value": value,
        "category": category,
        "unit": unit,
        "recorded_at": RECORDED_AT,
    }


METRICS = (
    _metric("page_views", 18_432, "usage", "views"),
    _metric("unique_visitors", 3_927, "usage", "visitors"),
    _metric("active_users", 612, "usage", "users"),
    _metric("new_signups", 37, "usage", "users"),
    _metric("uploads_per_day", 148, "usage", "uploads"),
    _metric("search_queries", 2_265, "usage", "queries"),
    _metric("likes_per_day", 5_310, "usage", "likes"),
    _metric("avg_page_load_time", 842.5, "performance", "ms"),
    _metric("p95_image_load_time", 1_630.0, "performance", "ms"),
    _metric("avg_api_response_time", 118.4, "performance", "ms"),
    _metric("api_error_rate", 0.37, "performance", "%"),
    _metric("cdn_cache_hit_ratio", 94.2, "performance", "%"),
    _metric("storage_used", 412_316_758_016, "storage", "bytes"),
    _metric("cdn_bandwidth", 96_418_236_416, "storage", "bytes"),
    _metric("ai_generated_share", 23.5, "content", "%"),
)


def run(db):
    names = [row["metric"] for row in METRICS]
    present = set(
        Analytics.select(Analytics.metric, Analytics.recorded_at)
        .where(Analytics.metric.in_(names))
        .tuples()
    )
    missing = [row for row in METRICS if (row["metric"], row["recorded_at"]) not in present]
    if missing:
        Analytics.insert_many(missing).execute()
