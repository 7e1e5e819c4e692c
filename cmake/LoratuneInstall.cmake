# LoratuneInstall.cmake - what `cmake --install` puts where, by component:
#   runtime  libloratune.so.<version> and its SONAME link libloratune.so.<major>   (libloratune0)
#   dev      loratune.h, the libloratune.so link, libloratune.a, loratune.pc and the CMake package
#            loratune::loratune (+ loratune::loratune_static)                        (libloratune-dev)
#   cli      the loratune command
#   python   pip builds only (scikit-build-core sets SKBUILD): the library inside the Python
#            package, as one file named by its SONAME (wheels hold no symbolic links)
# Included from the top-level CMakeLists.txt once the targets exist.

if(SKBUILD)
  # Where the installed package finds the CUDA libraries: first the NVIDIA pip packages beside
  # it in site-packages (as PyTorch's wheels do: nvidia-cuda-runtime-cu12 / nvidia-cublas-cu12
  # keep one folder per library, the CUDA 13 ones share nvidia/cu13/lib), then the toolkit this
  # was built with; the system loader's own paths (ld.so.conf, LD_LIBRARY_PATH) come after.
  set(LT_WHEEL_RPATH "")
  if(LT_HAVE_CUDA)
    set(LT_WHEEL_RPATH "$ORIGIN/../nvidia/cuda_runtime/lib" "$ORIGIN/../nvidia/cublas/lib"
      "$ORIGIN/../nvidia/nccl/lib" "$ORIGIN/../nvidia/cu13/lib" "${CUDAToolkit_LIBRARY_DIR}")
  endif()
  set_target_properties(loratune PROPERTIES INSTALL_RPATH "${LT_WHEEL_RPATH}" PUBLIC_HEADER "")
  install(TARGETS loratune LIBRARY DESTINATION loratune COMPONENT python NAMELINK_SKIP)
  return()
endif()

install(TARGETS loratune EXPORT loratuneTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT dev
  PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev)

# The static archive: the same objects as the shared library. Its dependencies are named as
# the linker knows them (-ljansson ...), so the exported target needs no pkg-config.
add_library(loratune_archive STATIC $<TARGET_OBJECTS:loratune_obj>)
set_target_properties(loratune_archive PROPERTIES OUTPUT_NAME loratune EXPORT_NAME loratune_static)
target_include_directories(loratune_archive INTERFACE $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(loratune_archive INTERFACE
  ${JANSSON_LIBRARIES} ${PCRE2_LIBRARIES} ${UTF8PROC_LIBRARIES} Threads::Threads m)
set(LT_PC_LIBS_PRIVATE "-lm -pthread")
if(LT_HAVE_CUDA)
  target_link_libraries(loratune_archive INTERFACE CUDA::cudart CUDA::cublas CUDA::cublasLt)
  string(APPEND LT_PC_LIBS_PRIVATE " -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcublas -lcudart -lstdc++")
  if(LT_NCCL_LIB)
    target_link_libraries(loratune_archive INTERFACE ${LT_NCCL_LIB})
    string(APPEND LT_PC_LIBS_PRIVATE " ${LT_NCCL_LIB}")
  endif()
endif()
install(TARGETS loratune_archive EXPORT loratuneTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)

# pkg-config: the .pc finds its prefix relative to itself, so `cmake --install --prefix X`
# anywhere works.
set(LT_PC_REQUIRES_PRIVATE "jansson libpcre2-8 libutf8proc")
file(RELATIVE_PATH LT_PC_UP "/p/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/p")
configure_file(${PROJECT_SOURCE_DIR}/pkgconfig/loratune.pc.in ${PROJECT_BINARY_DIR}/loratune.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/loratune.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)
# The build tree as a pkg-config package: PKG_CONFIG_PATH=<build>/pkgconfig finds
# loratune-uninstalled.pc before any installed loratune.pc (the Go binding's tests use it).
configure_file(${PROJECT_SOURCE_DIR}/pkgconfig/loratune-uninstalled.pc.in
  ${PROJECT_BINARY_DIR}/pkgconfig/loratune-uninstalled.pc @ONLY)

# The CMake package: find_package(loratune) -> loratune::loratune, loratune::loratune_static
include(CMakePackageConfigHelpers)
install(EXPORT loratuneTargets NAMESPACE loratune:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/loratune COMPONENT dev)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/loratuneConfig.cmake.in ${PROJECT_BINARY_DIR}/loratuneConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/loratune)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/loratuneConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/loratuneConfig.cmake ${PROJECT_BINARY_DIR}/loratuneConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/loratune COMPONENT dev)

include(${CMAKE_CURRENT_LIST_DIR}/LoratunePackaging.cmake)
