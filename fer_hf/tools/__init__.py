"""Tooling run from a checkout (never copied to the Hub): training, evaluation, export, backbone import, data.

The Hub payload is the top level of `fer_hf/`; modules here import it absolutely (`from fer_hf.modeling_fer
import ...`), and the payload never imports from here (a test checks both directions).
"""
