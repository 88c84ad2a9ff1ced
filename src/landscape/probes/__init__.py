"""landscape.probes"""
