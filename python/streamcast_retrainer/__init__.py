"""streamcast_retrainer: a reference retraining service that closes streamcast's loop.

It follows the `alerts` topic; on `retrain_requested` for its model it reads recent history
from Kafka (input events and actuals), trains a new version with the recipe recorded in the
serving bundle's `metadata`, scores the serving version and the new one on the newest windows
(never trained on), and publishes the new version to the model root only when it is better by
a margin. Every outcome is an alert: `retrain_published`, `retrain_rejected` or
`retrain_failed`. See README.md beside this file.

It is a reference to adapt, not a training platform.
"""

__version__ = "0.1.0"

# The alert kinds this service writes (schemas/alert.schema.json).
OUTCOME_KINDS = ("retrain_published", "retrain_rejected", "retrain_failed")
