"""The claim loop, heartbeats, progress, cancellation, lease fencing and process supervision."""
