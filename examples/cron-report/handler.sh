#!/bin/sh
# Invoked on a schedule by a cron trigger (and by anyone who calls it): prints when it ran and
# the body it was given.
echo "report at $(date -u +%H:%M:%S) via ${Http_X_Flint_Trigger:-http}: $(cat)"
