"""The public side: web form, SMTP intake, durable outbox and delivery.

Holds outbound SMTP credentials, never IMAP credentials; imports nothing from
``mailbridge.station``.
"""
