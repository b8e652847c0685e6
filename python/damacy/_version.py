# The one version of the Python package and the C++ library (CMakeLists.txt reads this line).
__version__ = "0.1.0"
