"""nbgrader configuration: instructor sources in solutions/, student versions released to labs/.

    nbgrader generate_assignment lab01_perceptron --force   # solutions/ -> labs/
    nbgrader autograde lab01_perceptron                     # submitted/ -> autograded/
"""

c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "dlcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "labs"

# What a student sees in place of the solution.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A submission that hangs is stopped, graded as far as it got, and reported.
c.ExecutePreprocessor.timeout = 120
c.Execute.timeout = 120
