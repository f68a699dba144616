"""Audit reports: definitions (the six reports as data), filters, selectors, columns, the CSV
and PDF renderers, and the service that runs a report and records who saw or took it."""
