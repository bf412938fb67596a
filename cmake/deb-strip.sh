#!/bin/sh
# The strip the Debian package is built with (tools/package.sh passes it as CMAKE_STRIP, which
# CPack's CPACK_STRIP_FILES runs on each installed program): also drop the .comment and .note
# sections, as dh_strip does (lintian: binary-has-unneeded-section).
exec strip --remove-section=.comment --remove-section=.note "$@"
