"""SMS gateways (STYLE R17): one interface, and a gateway only ever carries a ``NotificationSms``.

``notification`` builds the only values a gateway accepts; ``gateway`` is the interface and
``get_gateway()``; ``local`` records SMS for the demo and tests; ``twilio`` is the only module
that imports the Twilio SDK; ``faulty`` injects failures for reliability tests.
"""
