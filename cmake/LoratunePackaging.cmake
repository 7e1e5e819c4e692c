# LoratunePackaging.cmake - Debian packages through CPack (`cpack -G DEB` in a build tree):
#   libloratune0     the shared library with its SONAME (component runtime); Depends computed by
#                    dpkg-shlibdeps (libc6, libjansson4, libpcre2-8-0, libutf8proc2 ...); a shlibs
#                    file so that packages linking it get the right dependency
#   libloratune-dev  header, libloratune.so link, libloratune.a, loratune.pc, the CMake package
#                    (component dev); Depends on libloratune0 of the same version and on the -dev
#                    packages that loratune.pc's Requires.private and libloratune.a need
# With the CUDA backend, cudart/cuBLAS/NCCL from NVIDIA's toolkit (no Debian package) are left out of
# Depends (CPack runs dpkg-shlibdeps with --ignore-missing-info).
# Configure with -DCMAKE_INSTALL_PREFIX=/usr so that GNUInstallDirs picks the multiarch library
# folder (lib/x86_64-linux-gnu), and with Debian's hardening flags
# (CFLAGS="$(dpkg-buildflags --get CFLAGS)" LDFLAGS="$(dpkg-buildflags --get LDFLAGS)").
set(LT_DEB_RELEASE 1)
set(LT_DEB_VERSION "${PROJECT_VERSION}-${LT_DEB_RELEASE}")
set(LT_DEB_MAINTAINER "loratune maintainers <loratune@users.noreply.github.com>")

# copyright (machine-readable) and changelog.Debian.gz in each package's doc folder
set(LT_DEB_DOC ${PROJECT_BINARY_DIR}/debian-doc)
file(MAKE_DIRECTORY ${LT_DEB_DOC})
configure_file(${CMAKE_CURRENT_LIST_DIR}/debian/copyright ${LT_DEB_DOC}/copyright COPYONLY)
if(DEFINED ENV{SOURCE_DATE_EPOCH})
  string(TIMESTAMP LT_DEB_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)
else()
  set(LT_DEB_DATE "Mon, 07 Dec 2026 12:00:00 +0000")  # fixed, so packages are reproducible
endif()
file(WRITE ${LT_DEB_DOC}/changelog.Debian
"loratune (${LT_DEB_VERSION}) unstable; urgency=medium

  * Built with CPack from the loratune source tree at version ${PROJECT_VERSION}.

 -- ${LT_DEB_MAINTAINER}  ${LT_DEB_DATE}
")
find_program(LT_GZIP gzip)
if(LT_GZIP)
  execute_process(COMMAND ${LT_GZIP} -9nc ${LT_DEB_DOC}/changelog.Debian
    OUTPUT_FILE ${LT_DEB_DOC}/changelog.Debian.gz RESULT_VARIABLE _gz)
  foreach(_pkg_comp "libloratune0;runtime" "libloratune-dev;dev")
    list(GET _pkg_comp 0 _pkg)
    list(GET _pkg_comp 1 _comp)
    install(FILES ${LT_DEB_DOC}/copyright ${LT_DEB_DOC}/changelog.Debian.gz
      DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/doc/${_pkg} COMPONENT ${_comp})
    # packages built here are not uploads to Debian: no ITP bug to close
    file(WRITE ${LT_DEB_DOC}/${_pkg}.lintian-overrides "${_pkg}: initial-upload-closes-no-bugs\n")
    install(FILES ${LT_DEB_DOC}/${_pkg}.lintian-overrides RENAME ${_pkg}
      DESTINATION ${CMAKE_INSTALL_DATAROOTDIR}/lintian/overrides COMPONENT ${_comp})
  endforeach()
endif()

# What Debian's dh_strip does beyond CPACK_STRIP_FILES: drop the compiler's .comment section
# from the library, and the debug sections from the static archive (CPack leaves archives alone).
if(CMAKE_STRIP)
  install(CODE "if(CMAKE_INSTALL_DO_STRIP)
    execute_process(COMMAND \"${CMAKE_STRIP}\" --remove-section=.comment
      \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/libloratune.so.${PROJECT_VERSION}\")
  endif()" COMPONENT runtime)
  install(CODE "if(CMAKE_INSTALL_DO_STRIP)
    execute_process(COMMAND \"${CMAKE_STRIP}\" --strip-debug --remove-section=.comment
      \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/libloratune.a\")
  endif()" COMPONENT dev)
endif()

set(CPACK_PACKAGE_NAME loratune)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR loratune)
set(CPACK_PACKAGE_CONTACT "${LT_DEB_MAINTAINER}")
set(CPACK_PACKAGE_HOMEPAGE_URL "https://github.com/loratune/loratune")
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_BINARY_DIR}/packages)
set(CPACK_GENERATOR DEB)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_COMPONENTS_ALL runtime dev)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${LT_DEB_RELEASE})
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${LT_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS_POLICY ">=")

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME libloratune0)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SECTION libs)
# dpkg runs ldconfig through this trigger. (CPack also writes postinst/postrm scripts calling
# ldconfig for any library under /usr/lib, with no switch to turn them off: lintian's
# maintscript-calls-ldconfig warning comes from those.)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_CONTROL_EXTRA ${CMAKE_CURRENT_LIST_DIR}/debian/triggers)
# control files get Debian's 0644 whatever the umask of the checkout (lintian refuses 0664)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_COMPONENT_RUNTIME_DESCRIPTION
"LoRA fine-tuning of causal language models on a 4-bit base
libloratune fine-tunes Hugging Face causal language models (Qwen2, the Llama
family) with LoRA on a frozen NF4-quantized base, through a stable C API:
tokenizer, Alpaca/chat datasets, a step-driven trainer, generation, PEFT
adapters and GGUF export.
.
This package holds the shared library.")

set(CPACK_DEBIAN_DEV_PACKAGE_NAME libloratune-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
  "libloratune0 (= ${LT_DEB_VERSION}), libjansson-dev, libpcre2-dev, libutf8proc-dev")
set(CPACK_COMPONENT_DEV_DESCRIPTION
"LoRA fine-tuning of causal language models on a 4-bit base (development files)
libloratune fine-tunes Hugging Face causal language models (Qwen2, the Llama
family) with LoRA on a frozen NF4-quantized base, through a stable C API.
.
This package holds the header, the static library, the pkg-config file
(loratune) and the CMake package (find_package(loratune)).")

include(CPack)
