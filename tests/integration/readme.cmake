# The README test: the shell commands of README.md's enrolment section (and of "Managing the CA
# with certmint" when present) run against a throwaway instance (certmint init) and a real
# certmintd, so the manual cannot rot. include()d from tests/integration/CMakeLists.txt.
if(TARGET certmintd AND TARGET certmint)
  add_test(NAME integration_readme
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/test_readme.sh $<TARGET_FILE:certmintd>
                   $<TARGET_FILE:certmint> ${PROJECT_SOURCE_DIR}/README.md)
  set_tests_properties(integration_readme PROPERTIES TIMEOUT 300)
endif()
