#!/usr/bin/env bash
# The README's example calls against `make run`'s service (synthetic retailer, seed 0).
set -euo pipefail
URL=${URL:-http://127.0.0.1:3000}
KEY=${RETENTION_API_KEY:-demo-key}
call() { echo "# POST $1 $2"; curl -s -H "X-API-Key: $KEY" -H 'Content-Type: application/json' \
  -d "$2" "$URL$1" | python3 -m json.tool; echo; }
call /score '{"customer_ids": ["c0000007", "c9999999"]}'
call /risk_list '{"top_n": 2, "filters": {"bands": ["high"], "tiers": ["platinum", "gold"]}}'
call /recommend '{"customer_ids": ["c0000008", "c0000007"], "k": 3, "campaign_id": "winter"}'
call /score_features '{"rows": [{"customer_id": "what-if", "frequency": 4, "recency": 200, "T": 300, "monetary_value": 60, "days_since_last": 100, "tenure_days": 300, "total_orders": 5, "total_spend": 300, "avg_order_value": 60}]}'
call /feedback '{"events": [{"event": "sent", "customer_id": "c0000008", "campaign_id": "winter", "offer_id": "winback-10", "channel": "email"}]}'
call /metadata '{}'
