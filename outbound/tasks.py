from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def outbound_sweep() -> int:
    """Every minute (beat): deliver due webhook events (placeholder)."""
    return 0
