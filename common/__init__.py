"""Helpers that the shipboard agent, the shore relay and the union's app share.

A leaf package: it imports nothing of ours (neither ``shipboard``, ``shore``, ``protocol``
nor ``vessel_relay``), so either side may use it without depending on the other.

- :mod:`common.signins`: one sign-in guard per process (wrong PINs and passwords counted
  per person across every door, with a growing back-off).
- :mod:`common.http`: request bodies bounded before they are read, JSON parsed with bounded
  depth, integers and text, and the typed refusals that become a 4xx with a sentence.
"""
