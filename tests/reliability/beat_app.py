"""The production Celery app with a fast beat schedule, for ``celery -A tests.reliability.beat_app
beat`` in the two-schedulers scenario: the same tasks as config/settings.py CELERY_BEAT_SCHEDULE,
every second instead of every minute, so a few seconds hold several runs of each."""

from config.celery import app

app.conf.beat_schedule = {
    "reminders-due": {"task": "reminders.tasks.reminders_due", "schedule": 1.0},
    "outbox-sweep": {"task": "messaging.tasks.outbox_sweep", "schedule": 2.0},
}

__all__ = ["app"]
