"""What Chatwoot sends and accepts: webhook payloads (``payload``), their signature
(``signature``), the REST client (``client``) and what a reply may hold (``replies``).
Every fact that depends on a Chatwoot release lives in this package."""
