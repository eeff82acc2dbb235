"""Alert review: alert records, two-person review, live subscribers, console, retention, figures.

Hosted by the alert service: :class:`~openlfr.review.service.ReviewService` keeps every alert
the stage raises in the :class:`~openlfr.review.store.ReviewStore` and tells the live
subscribers (:class:`~openlfr.review.events.EventHub`); the router of
:mod:`openlfr.review.api` serves the records, the reviews, the stream, the per-deployment
report and the operator console; :mod:`openlfr.review.metrics` exposes the per-deployment
figures; :class:`~openlfr.review.retention.RetentionWorker` enforces the retention periods.
"""
