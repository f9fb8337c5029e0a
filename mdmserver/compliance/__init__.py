"""Compliance policies: named rules over the inventory devices report, evaluated set-based in SQL."""
