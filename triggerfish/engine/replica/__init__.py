"""What runs inside a replica. Only the standard library and cloudpickle may be imported here,
so a replica starts in any image that has python3 (the package is mounted beside it)."""
