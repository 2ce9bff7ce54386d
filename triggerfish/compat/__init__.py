"""The call styles of the products triggerfish learns from (../shared/seeds), each a thin
layer over triggerfish's own API: code written for one runs with its import changed."""
