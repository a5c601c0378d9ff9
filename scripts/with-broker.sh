#!/usr/bin/env bash
# Starts a nisshi broker (in-memory storage) on a free port, exports STREAMCAST_TEST_BOOTSTRAP,
# runs the given command, and stops the broker whatever the command's outcome.
set -euo pipefail
NISSHI=${NISSHI:-nisshi}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp -t nisshi.XXXXXX.log)
"$NISSHI" broker \
  --listener-url "tcp://127.0.0.1:$port" \
  --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine "memory://streamcast/" >"$log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null || true' EXIT
for _ in $(seq 1 150); do
  if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
  if ! kill -0 $broker 2>/dev/null; then echo "nisshi exited:"; cat "$log"; exit 1; fi
  sleep 0.2
done
echo "nisshi broker on 127.0.0.1:$port (log $log)"
export STREAMCAST_TEST_BOOTSTRAP="127.0.0.1:$port"
"$@"
